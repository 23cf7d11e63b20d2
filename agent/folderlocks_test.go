package agent

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/watch"
)

// A watch whose folder cannot hold the lock file is marked Unlocked for
// the pipeline (which then re-checks items before a PATCH); a locked one
// is not.
func TestFolderLocksMarkUnlockedWatches(t *testing.T) {
	if runtime.GOOS == "windows" || os.Geteuid() == 0 {
		t.Skip("needs a non-root Unix user: root writes into read-only folders")
	}
	ro, rw := t.TempDir(), t.TempDir()
	if err := os.Chmod(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(ro, 0o755) })
	cfg := &config.Config{Watch: []watch.Spec{{Path: ro}, {Path: rw}}}
	fl := newFolderLocks(filepath.Join(t.TempDir(), "state.db"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer fl.close()
	if err := fl.acquire(cfg); err != nil {
		t.Fatal(err)
	}
	ws := fl.mark(Watches(cfg))
	if got := []bool{ws[0].Unlocked, ws[1].Unlocked}; !got[0] || got[1] {
		t.Errorf("Unlocked = %v for [read-only, writable]; want [true false]", got)
	}
	fl.keepOnly(&config.Config{Watch: []watch.Spec{{Path: rw}}})
	if fl.unlocked[filepath.Clean(ro)] {
		t.Error("a folder no longer watched is still marked unlocked")
	}
}
