package ingest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/state"
)

// crashOnFinish is a state file whose process dies right after a done
// image's files were moved, before that is committed.
type crashOnFinish struct {
	Store
	armed atomic.Bool
	died  atomic.Bool
}

func (s *crashOnFinish) Update(id uint64, fn func(*state.Image) error) (state.Image, error) {
	if s.armed.Load() {
		cur, err := s.Store.Get(id)
		if err == nil {
			probe := cur
			probe.Files = append([]state.File(nil), cur.Files...)
			probe.Values = state.CloneValues(cur.Values)
			if fn(&probe) == nil && probe.State == state.Finished && probe.MovedTo != "" && !cur.ActionDone {
				s.died.Store(true)
				return state.Image{}, errCrash
			}
		}
	}
	return s.Store.Update(id, fn)
}

// crashAfterPatch is an API whose process dies right after a PATCH went
// through: the done_dir target was committed with the PATCH intent, and
// nothing has been moved yet.
type crashAfterPatch struct {
	API
	cancel  context.CancelFunc
	crashed *atomic.Bool
}

func (a crashAfterPatch) UpdateArchiveItem(ctx context.Context, pk string, values []gcapi.ValueUpdate) (*gcapi.ArchiveItem, error) {
	it, err := a.API.UpdateArchiveItem(ctx, pk, values)
	if err != nil {
		return it, err
	}
	a.crashed.Store(true)
	a.cancel()
	return nil, errCrash
}

// Moves to done_dir: two images with the same relative path (the second
// goes to done_dir/<id>, the name being taken), and the process killed
// after the second is committed done, at the instant before its files are
// renamed, or after the rename before it is recorded. The restarted agent
// finishes the move into the recorded folder, or finds it done there: the
// second image's record names its own file, the first image's file is
// untouched, and nothing is left in the drop folder.
func TestDoneDirMoveSurvivesCrash(t *testing.T) {
	for _, at := range []string{"between the commit and the rename", "after the rename"} {
		t.Run(at, func(t *testing.T) {
			h := newHarness(t, gcapitest.Options{}, "move")
			first := gcapitest.SampleMHA(1, 4, 4, 2)
			p := h.pipeline(h.config())
			stop := start(p)
			if err := p.Submit(context.Background(), h.group(KindSingle, "x.mha", h.write("x.mha", first))); err != nil {
				t.Fatal(err)
			}
			h.waitSettled(1)
			if err := stop(); err != nil {
				t.Fatal(err)
			}

			second := gcapitest.SampleMHA(2, 4, 4, 3)
			g := h.group(KindSingle, "x.mha", h.write("x.mha", second))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cfg := h.config()
			var store Store = h.store
			var crashed atomic.Bool
			api := h.learning(h.api)
			finish := &crashOnFinish{Store: h.store}
			switch at {
			case "between the commit and the rename":
				// The target is committed with the PATCH intent; the
				// rename follows the import's confirmation.
				api = crashAfterPatch{API: api, cancel: cancel, crashed: &crashed}
			case "after the rename":
				finish.armed.Store(true)
				store = finish
			}
			p = NewPipeline(cfg, store, api, nil)
			errc := make(chan error, 1)
			go func() { errc <- p.Run(ctx) }()
			if err := p.Submit(ctx, g); err != nil {
				t.Fatal(err)
			}
			var err error
			eventually(t, 30*time.Second, "the run to end at the crash point", func() bool {
				select {
				case err = <-errc:
					return true
				default:
				}
				if imgs, _ := h.store.List(state.Finished); len(imgs) == 2 {
					cancel()
					t.Fatalf("the run did not reach the crash point; it ended with %v", <-errc)
				}
				return false
			})
			if finish.died.Load() {
				crashed.Store(true)
			}
			if !crashed.Load() {
				t.Fatalf("the run ended (%v) without reaching the crash point", err)
			}
			if err != nil && !errors.Is(err, ErrStopped) {
				t.Fatalf("the crashed run ended with %v", err)
			}
			_, statErr := os.Lstat(g.Files[0].Path)
			if moved := errors.Is(statErr, os.ErrNotExist); moved != (at == "after the rename") {
				t.Fatalf("crash %s: file moved = %v (%v)", at, moved, statErr)
			}

			if at == "between the commit and the rename" {
				imgs, err := h.store.List()
				if err != nil {
					t.Fatal(err)
				}
				if got, want := imgs[len(imgs)-1].DoneTarget, filepath.Join(h.watch.DoneDir, "000002"); got != want {
					t.Fatalf("at the crash the second image's done target is %q; want %q committed before any rename", got, want)
				}
			}
			h.reopen()
			p = h.pipeline(h.config())
			stop = start(p)
			imgs := h.waitSettled(2)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			img := imgs[0]
			if img.ID != lastID(imgs) {
				img = imgs[1]
			}
			if img.State != state.Finished {
				t.Fatalf("second image is %s (%s); want finished", img.State, img.LastError)
			}
			if got, want := img.MovedTo, filepath.Join(h.watch.DoneDir, "000002"); got != want {
				t.Errorf("second image moved to %q; want %q", got, want)
			}
			if b, err := os.ReadFile(filepath.Join(img.MovedTo, "x.mha")); err != nil || !bytes.Equal(b, second) {
				t.Errorf("the second image's record does not name its own file (%v)", err)
			}
			if b, err := os.ReadFile(filepath.Join(h.watch.DoneDir, "x.mha")); err != nil || !bytes.Equal(b, first) {
				t.Errorf("the first image's file is not left in done_dir (%v)", err)
			}
			if _, err := os.Lstat(g.Files[0].Path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the second image's file is still in the drop folder: %v", err)
			}
			h.checkArchive(2)
		})
	}
}
