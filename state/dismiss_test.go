package state

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestDismiss(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	record := func(st State, actionDone bool) uint64 {
		t.Helper()
		img := newImage(string(st))
		img.State, img.ActionDone, img.LastError = st, actionDone, "import failed: Could not read header"
		if err := s.Create(img); err != nil {
			t.Fatal(err)
		}
		return img.ID
	}
	failed, finished, moving := record(Failed, true), record(Finished, true), record(Failed, false)

	t.Run("a failed image leaves the failed count and keeps its story", func(t *testing.T) {
		got, err := s.Dismiss(failed)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != Dismissed || !strings.Contains(got.LastError, "Could not read header") {
			t.Errorf("dismissed: state %s, last error %q; want dismissed, and the error it failed with", got.State, got.LastError)
		}
		if n := len(got.Errors); n == 0 || got.Errors[n-1].State != Failed || !strings.Contains(got.Errors[n-1].Msg, "dismissed") {
			t.Errorf("errors %+v; want the dismissal noted, in state failed", got.Errors)
		}
		counts, err := s.Counts()
		if err != nil {
			t.Fatal(err)
		}
		if counts[Failed] != 1 || counts[Dismissed] != 1 {
			t.Errorf("counts %v; want failed 1 (the image still moving its files), dismissed 1", counts)
		}
		if imgs, _ := s.Unfinished(); len(imgs) != 1 || imgs[0].ID != moving {
			t.Errorf("unfinished %+v; want only image %d", imgs, moving)
		}
	})
	for _, tc := range []struct {
		name string
		id   uint64
		want []string
	}{
		{"a finished image is refused", finished, []string{"image 2 is finished, not failed"}},
		{"a dismissed image is refused", failed, []string{"image 1 is dismissed, not failed"}},
		{"a failed image whose files are still moving is refused", moving, []string{"image 3 has failed", "dismiss it once it has"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := s.Get(tc.id)
			_, err := s.Dismiss(tc.id)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("Dismiss(%d) err = %v; want it to say %q", tc.id, err, w)
				}
			}
			if after, _ := s.Get(tc.id); after.State != before.State || after.LastError != before.LastError {
				t.Errorf("a refused Dismiss wrote: %s %q, was %s %q", after.State, after.LastError, before.State, before.LastError)
			}
		})
	}
	if _, err := s.Dismiss(99); !errors.Is(err, ErrNotFound) {
		t.Errorf("Dismiss(99) err = %v; want ErrNotFound", err)
	}
}
