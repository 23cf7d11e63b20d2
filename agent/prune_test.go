package agent

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gcingest/gcingest/state"
)

func TestPruneFinished(t *testing.T) {
	dir := t.TempDir()
	st, err := state.Open(filepath.Join(dir, "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	kept := filepath.Join(dir, "kept.mha")
	if err := os.WriteFile(kept, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	old, recent := now.Add(-40*24*time.Hour), now.Add(-time.Hour)
	cases := []struct {
		key      string
		st       state.State
		finished time.Time
		path     string
		wantGone bool
	}{
		{"old-moved", state.Finished, old, filepath.Join(dir, "gone.mha"), true},
		{"old-duplicate", state.Duplicate, old, filepath.Join(dir, "gone2.mha"), true},
		{"old-file-still-in-folder", state.Finished, old, kept, false},
		{"recent", state.Finished, recent, filepath.Join(dir, "gone3.mha"), false},
		{"old-failed", state.Failed, old, filepath.Join(dir, "gone4.mha"), false},
	}
	ids := map[string]uint64{}
	for _, c := range cases {
		// Recorded as an earlier run left it: created in its state where
		// Create allows that, else moved there as the pipeline would.
		img := &state.Image{Watch: dir, Key: c.key, Files: []state.File{{Rel: c.key, Path: c.path}}}
		if slices.Contains(state.Creatable, c.st) {
			img.State = c.st
		}
		if err := st.Create(img); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Update(img.ID, func(r *state.Image) error {
			r.State, r.Finished, r.ActionDone = c.st, c.finished, true
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		ids[c.key] = img.ID
	}
	n, err := pruneFinished(st, 30*24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("pruned %d, want 2", n)
	}
	for _, c := range cases {
		_, err := st.Get(ids[c.key])
		if gone := err != nil; gone != c.wantGone {
			t.Errorf("%s: gone = %v, want %v", c.key, gone, c.wantGone)
		}
	}
}
