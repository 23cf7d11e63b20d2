package watcher_test

import (
	"context"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/gcingest/gcingest/watcher"
)

// A consumer keeps a map: full scans replace it, other batches update it.
func ExampleWatcher_Run() {
	w, err := watcher.New(watcher.Options{Root: "/data/scanner1/outbox", Logger: slog.Default()})
	if err != nil {
		panic(err) // a relative or empty root
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	batches := make(chan watcher.Batch)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, batches) }()

	files := map[string]fs.FileInfo{}
	for b := range batches {
		if b.FullScan {
			clear(files)
		}
		for _, ev := range b.Events {
			if ev.Info != nil {
				files[ev.Path] = ev.Info
				continue
			}
			delete(files, ev.Path)
			for p := range files { // the path may have been a folder
				if strings.HasPrefix(p, ev.Path+string(filepath.Separator)) {
					delete(files, p)
				}
			}
		}
		if len(files) > 1000 {
			break
		}
	}
	cancel()
	<-done // Run has ended every goroutine it started
}
