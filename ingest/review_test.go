package ingest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/state"
)

// afterPatch runs a function once the item's PATCH has been answered, i.e.
// after the upload but before the import is confirmed.
type afterPatch struct {
	API
	do func()
}

func (a afterPatch) UpdateArchiveItem(ctx context.Context, pk string, v []gcapi.ValueUpdate) (*gcapi.ArchiveItem, error) {
	it, err := a.API.UpdateArchiveItem(ctx, pk, v)
	a.do()
	return it, err
}

// A file written again under the same name after its upload (a scanner
// exporting the series again) holds content that was never uploaded: the
// after-upload action of the earlier image must leave it alone.
func TestAfterActionLeavesFileChangedSinceUpload(t *testing.T) {
	for _, after := range []string{"delete", "move"} {
		t.Run(after, func(t *testing.T) {
			h := newHarness(t, gcapitest.Options{}, after)
			newer := gcapitest.SampleMHA(7, 4, 4, 3)
			f := h.write("scan.mha", gcapitest.SampleMHA(1, 4, 4, 2))
			var once sync.Once
			api := afterPatch{API: h.api, do: func() {
				once.Do(func() {
					if err := os.WriteFile(f.Path, newer, 0o644); err != nil {
						t.Error(err)
					}
					os.Chtimes(f.Path, time.Now(), time.Now().Add(time.Hour))
				})
			}}
			p := NewPipeline(h.config(), h.store, api, nil)
			if err := p.Submit(context.Background(), h.group(KindSingle, "scan.mha", f)); err != nil {
				t.Fatal(err)
			}
			stop := start(p)
			imgs := h.waitSettled(1)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if imgs[0].State != state.Finished {
				t.Fatalf("image is %s (%s); want finished", imgs[0].State, imgs[0].LastError)
			}
			got, err := os.ReadFile(f.Path)
			if err != nil {
				t.Fatalf("the rewritten file is gone from the drop folder after the earlier image's %s: %v", after, err)
			}
			if !bytes.Equal(got, newer) {
				t.Errorf("drop folder holds %d bytes; want the rewritten file's %d", len(got), len(newer))
			}
		})
	}
}

// A failed image that cannot be retried (its file was removed from
// failed_dir) must not hold up the images dropped after it.
func TestRetryFailedThatCannotRestoreDoesNotStall(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	p := h.pipeline(h.config())
	stop := start(p)
	defer stop()
	if err := p.Submit(context.Background(), h.group(KindSingle, "empty.mha", h.write("empty.mha", nil))); err != nil {
		t.Fatal(err)
	}
	imgs := h.waitSettled(1)
	if imgs[0].State != state.Failed || imgs[0].MovedTo == "" {
		t.Fatalf("image is %s, moved to %q; want failed and moved to failed_dir", imgs[0].State, imgs[0].MovedTo)
	}
	if err := os.Remove(filepath.Join(imgs[0].MovedTo, "empty.mha")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.RetryFailed(context.Background()); err == nil {
		t.Fatal("RetryFailed of an image whose file is gone: no error")
	}
	if err := p.Submit(context.Background(), h.group(KindSingle, "next.mha", h.write("next.mha", gcapitest.SampleMHA(2, 4, 4, 2)))); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the next image finished, not stalled behind the failed retry", func() bool {
		img, err := h.store.Get(2)
		if err != nil {
			t.Fatal(err)
		}
		return img.State == state.Finished
	})
}

// failPartOnce fails the upload once, right after its first part was
// accepted and recorded, as a dropped connection would.
type failPartOnce struct {
	API
	once *sync.Once
}

func (a failPartOnce) UploadFile(ctx context.Context, f gcapi.FileUpload) (*gcapi.Upload, error) {
	onPart := f.OnPart
	f.OnPart = func(pt gcapi.Part) error {
		if err := onPart(pt); err != nil {
			return err
		}
		var err error
		a.once.Do(func() { err = errors.New("connection reset by peer") })
		return err
	}
	return a.API.UploadFile(ctx, f)
}

// gcingest retry on an image that is retrying by itself (half of its
// multipart upload sent) must not start it over: that would leave its
// multipart upload Initialized for good.
func TestRetryOfRetryingImageKeepsItsUpload(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	cfg := h.config()
	cfg.PartSize = 5 << 20
	cfg.RetryBase, cfg.RetryMax = time.Hour, time.Hour // only gcingest retry brings it back
	p := NewPipeline(cfg, h.store, failPartOnce{API: h.api, once: new(sync.Once)}, nil)
	big := gcapitest.SampleMHA(4, 1024, 1024, 6) // 6 MiB: several parts
	if err := p.Submit(context.Background(), h.group(KindSingle, "big.mha", h.write("big.mha", big))); err != nil {
		t.Fatal(err)
	}
	stop := start(p)
	defer stop()
	// Retrying is committed before the worker lets go of the image;
	// gcingest retry refuses an image a worker still holds.
	eventually(t, 15*time.Second, "the image retrying and released by its worker", func() bool {
		snap, err := p.Snapshot(false)
		if err != nil {
			t.Fatal(err)
		}
		return len(snap) == 1 && snap[0].State == state.Retrying && !snap[0].Active
	})
	if err := p.Retry(context.Background(), []uint64{1}); err != nil {
		t.Fatal(err)
	}
	imgs := h.waitSettled(1)
	if imgs[0].State != state.Finished {
		t.Fatalf("image is %s (%s); want finished", imgs[0].State, imgs[0].LastError)
	}
	h.checkArchive(1)
}

// brokenAbort fails the first part permanently and, while broken is set,
// every abort: a failed image whose multipart upload cannot be aborted yet.
type brokenAbort struct {
	API
	once   *sync.Once
	broken *atomic.Bool
}

func (a brokenAbort) UploadFile(ctx context.Context, f gcapi.FileUpload) (*gcapi.Upload, error) {
	onPart := f.OnPart
	f.OnPart = func(pt gcapi.Part) error {
		if err := onPart(pt); err != nil {
			return err
		}
		var err error
		a.once.Do(func() { err = inputErrorf("%s: refused", f.Filename) })
		return err
	}
	return a.API.UploadFile(ctx, f)
}

func (a brokenAbort) AbortUpload(ctx context.Context, u *gcapi.Upload) (*gcapi.Upload, error) {
	if a.broken.Load() {
		return nil, errors.New("connection reset by peer")
	}
	return a.API.AbortUpload(ctx, u)
}

// gcingest retry on a failed image whose open upload is not aborted yet
// must not forget that upload.
func TestRetryOfFailedImageWithOpenUpload(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	cfg := h.config()
	cfg.PartSize = 5 << 20
	broken := new(atomic.Bool)
	broken.Store(true)
	p := NewPipeline(cfg, h.store, brokenAbort{API: h.api, once: new(sync.Once), broken: broken}, nil)
	big := gcapitest.SampleMHA(4, 1024, 1024, 6) // 6 MiB: several parts
	if err := p.Submit(context.Background(), h.group(KindSingle, "big.mha", h.write("big.mha", big))); err != nil {
		t.Fatal(err)
	}
	stop := start(p)
	defer stop()
	eventually(t, 15*time.Second, "the image failed with its abort pending", func() bool {
		img, err := h.store.Get(1)
		if err != nil {
			t.Fatal(err)
		}
		return img.State == state.Failed && img.Attempts > 0 // the abort was tried and failed
	})
	retryErr := p.Retry(context.Background(), []uint64{1})
	broken.Store(false)
	if retryErr != nil {
		// Refused until the abort went through: then it may be retried.
		eventually(t, 15*time.Second, "the failed image's upload aborted and the image released", func() bool {
			snap, err := p.Snapshot(false)
			if err != nil {
				t.Fatal(err)
			}
			return len(snap) == 1 && snap[0].ActionDone && !snap[0].Active
		})
		if err := p.Retry(context.Background(), []uint64{1}); err != nil {
			t.Fatal(err)
		}
	}
	imgs := h.waitSettled(1)
	if imgs[0].State != state.Finished {
		t.Fatalf("image is %s (%s); want finished", imgs[0].State, imgs[0].LastError)
	}
	h.checkArchive(1)
}

// A failed image whose files cannot be moved to failed_dir (here a file
// stands where the folder should be) keeps them in the drop folder, and its
// record says so: no move target that holds nothing, and the reason it
// failed still first in its error, with the failed move after it.
func TestFailedImageFilesThatCannotMove(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	if err := os.WriteFile(h.watch.FailedDir, []byte("not a folder"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := h.pipeline(h.config())
	stop := start(p)
	defer stop()
	f := h.write("empty.mha", nil)
	if err := p.Submit(context.Background(), h.group(KindSingle, "empty.mha", f)); err != nil {
		t.Fatal(err)
	}
	img := h.waitSettled(1)[0]
	if img.State != state.Failed || !img.ActionDone {
		t.Fatalf("image is %s, action done %v; want failed and done", img.State, img.ActionDone)
	}
	if img.MovedTo != "" {
		t.Errorf("record says the files were moved to %s; they were not", img.MovedTo)
	}
	if _, err := os.Stat(f.Path); err != nil {
		t.Errorf("the file is not in the drop folder: %v", err)
	}
	if !strings.HasPrefix(img.LastError, f.Path+" is empty") || !strings.Contains(img.LastError, "could not be moved to failed_dir") ||
		!strings.Contains(img.LastError, "left in "+h.watch.Path) {
		t.Errorf("error = %q; want the reason, then that the files are left in the drop folder", img.LastError)
	}
}
