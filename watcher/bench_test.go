package watcher

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// makeTree creates folders × perFolder small files under root.
func makeTree(tb testing.TB, root string, folders, perFolder int) {
	tb.Helper()
	content := []byte("0123456789abcdef")
	for d := range folders {
		dir := filepath.Join(root, fmt.Sprintf("case-%04d", d/100), fmt.Sprintf("series %04d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			tb.Fatal(err)
		}
		for f := range perFolder {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("slice-%05d.dcm", f)), content, 0o644); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

// BenchmarkFullScan times one full scan of 100,000 files in 1,000 folders
// (plus 10 parent folders) and reports the heap the resulting Batch holds.
// "poll" lists only, as in poll mode; "events" also opens a fresh inotify
// instance and adds a watch per folder, as every full scan in event mode
// does.
//
//	go test -run '^$' -bench BenchmarkFullScan -benchmem ./watcher/
func BenchmarkFullScan(b *testing.B) {
	const folders, perFolder = 1000, 100
	root := b.TempDir()
	makeTree(b, root, folders, perFolder)

	for _, mode := range []struct {
		name string
		poll bool
	}{{"poll", true}, {"events", false}} {
		b.Run(mode.name, func(b *testing.B) {
			w, err := New(Options{Root: root, Poll: mode.poll, Rescan: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			out := make(chan Batch, 1)
			r := newRun(w, out)
			r.scanT = time.NewTimer(time.Hour)
			r.flushT = time.NewTimer(time.Hour)
			defer r.stop()
			ctx := context.Background()

			var batch Batch
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for b.Loop() {
				batch = Batch{} // let the previous listing go before the next one is built
				if !r.fullScan(ctx) {
					b.Fatal("full scan stopped")
				}
				batch = <-out
			}
			b.StopTimer()
			if got := len(batch.Events); got != folders*perFolder {
				b.Fatalf("full scan listed %d files, want %d", got, folders*perFolder)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			b.ReportMetric(float64(held)/1e6, "heap-MB")
			b.ReportMetric(float64(len(batch.Events)), "files")
			runtime.KeepAlive(batch)
		})
	}
}
