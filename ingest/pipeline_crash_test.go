package ingest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/state"
)

// errCrash marks the moment the simulated process died.
var errCrash = errors.New("simulated crash")

// crasher counts events (steps, API calls before and after they act, part
// callbacks) and at the n-th one "kills the process": it cancels the run's
// context and answers errCrash from then on, so nothing more is recorded.
type crasher struct {
	mu      sync.Mutex
	n, seen int
	dead    bool
	cancel  context.CancelFunc
}

func (c *crasher) tick() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return errCrash
	}
	c.seen++
	if c.seen >= c.n {
		c.dead = true
		c.cancel()
		return errCrash
	}
	return nil
}

// crashAPI is the real client with a crash point before and after each call.
type crashAPI struct {
	API
	c *crasher
}

func call[T any](c *crasher, f func() (T, error)) (T, error) {
	var zero T
	if err := c.tick(); err != nil {
		return zero, err
	}
	v, err := f()
	if cerr := c.tick(); cerr != nil {
		return zero, cerr // the request took effect; its answer is lost with the process
	}
	return v, err
}

func (a crashAPI) ArchiveItems(ctx context.Context, ar string) ([]gcapi.ArchiveItem, error) {
	return call(a.c, func() ([]gcapi.ArchiveItem, error) { return a.API.ArchiveItems(ctx, ar) })
}
func (a crashAPI) InterfaceBySlug(ctx context.Context, slug string) (*gcapi.Interface, error) {
	return call(a.c, func() (*gcapi.Interface, error) { return a.API.InterfaceBySlug(ctx, slug) })
}
func (a crashAPI) ArchiveItem(ctx context.Context, pk string) (*gcapi.ArchiveItem, error) {
	return call(a.c, func() (*gcapi.ArchiveItem, error) { return a.API.ArchiveItem(ctx, pk) })
}
func (a crashAPI) CreateArchiveItem(ctx context.Context, ar, title string) (*gcapi.ArchiveItem, error) {
	return call(a.c, func() (*gcapi.ArchiveItem, error) { return a.API.CreateArchiveItem(ctx, ar, title) })
}
func (a crashAPI) UpdateArchiveItem(ctx context.Context, pk string, v []gcapi.ValueUpdate) (*gcapi.ArchiveItem, error) {
	return call(a.c, func() (*gcapi.ArchiveItem, error) { return a.API.UpdateArchiveItem(ctx, pk, v) })
}
func (a crashAPI) UploadSessions(ctx context.Context) ([]gcapi.UploadSession, error) {
	return call(a.c, func() ([]gcapi.UploadSession, error) { return a.API.UploadSessions(ctx) })
}
func (a crashAPI) Upload(ctx context.Context, pk string) (*gcapi.Upload, error) {
	return call(a.c, func() (*gcapi.Upload, error) { return a.API.Upload(ctx, pk) })
}
func (a crashAPI) AbortUpload(ctx context.Context, u *gcapi.Upload) (*gcapi.Upload, error) {
	return call(a.c, func() (*gcapi.Upload, error) { return a.API.AbortUpload(ctx, u) })
}
func (a crashAPI) UploadFile(ctx context.Context, f gcapi.FileUpload) (*gcapi.Upload, error) {
	onCreated, onPart := f.OnCreated, f.OnPart
	f.OnCreated = func(u *gcapi.Upload) error {
		if err := a.c.tick(); err != nil {
			return err // died after the create, before recording it
		}
		return onCreated(u)
	}
	f.OnPart = func(p gcapi.Part) error {
		if err := a.c.tick(); err != nil {
			return err // died after a part was accepted, before recording it
		}
		return onPart(p)
	}
	return call(a.c, func() (*gcapi.Upload, error) { return a.API.UploadFile(ctx, f) })
}

// TestCrashAnywhere kills the pipeline at the n-th event for n = 1, 2, …:
// before every step, before and after every API call (so a create or a
// PATCH may have acted with its answer lost) and after each upload create
// and part. After every kill a new pipeline resumes on the reopened state
// file. In the end every image is in the archive exactly once, no value was
// replaced and no multipart upload is left open.
func TestCrashAnywhere(t *testing.T) {
	for _, faults := range []bool{false, true} {
		t.Run(fmt.Sprintf("faults=%v", faults), func(t *testing.T) {
			h := newHarness(t, gcapitest.Options{Seed: 11}, "move")
			if faults {
				h.srv.SetFaults(gcapitest.Faults{Rate5xx: 0.08, Rate500: 0.04, Rate429: 0.04, RateReset: 0.04, RetryAfter: time.Millisecond})
			}
			var groups []Group
			for i := range 4 {
				rel := fmt.Sprintf("d%d/img.mha", i)
				groups = append(groups, h.group(KindSingle, rel, h.write(rel, gcapitest.SampleMHA(int64(i), 4, 4, 2))))
			}
			hdr, raw := gcapitest.SampleMHDPair(9, 4, 4, 2, "p.raw")
			groups = append(groups, h.group(KindMHD, "m/p.mhd", h.write("m/p.mhd", hdr), h.write("m/p.raw", raw)))
			series := gcapitest.SampleDICOMSeries(2)
			var dcm []File
			for name, b := range series {
				dcm = append(dcm, h.write("z/"+name, b))
			}
			groups = append(groups, h.group(KindZip, "dicom:z", sortFiles(dcm)...))
			// Two parts: its pk and first part are recorded, so crashes
			// inside it resume the upload.
			big := gcapitest.SampleMHA(4, 1024, 1024, 6) // 6 MiB: several parts
			groups = append(groups, h.group(KindSingle, "big.mha", h.write("big.mha", big)))

			crashes := 0
			for n := 1; ; n++ {
				ctx, cancel := context.WithCancel(context.Background())
				c := &crasher{n: n, cancel: cancel}
				cfg := h.config()
				cfg.PartSize = 5 << 20
				cfg.BeforeStep = func(uint64, state.State) error { return c.tick() }
				p := NewPipeline(cfg, h.store, h.learning(crashAPI{API: h.api, c: c}), nil)
				errc := make(chan error, 1)
				go func() { errc <- p.Run(ctx) }()
				for _, g := range groups {
					if err := p.Submit(ctx, g); err != nil && ctx.Err() == nil {
						t.Fatal(err)
					}
				}
				done := waitDone(ctx, h.store, len(groups)) == nil
				cancel()
				if err := <-errc; err != nil {
					t.Fatalf("Run: %v", err)
				}
				if done {
					break
				}
				crashes++
				h.reopen()
				if n > 2000 {
					t.Fatal("not done after 2000 crashes")
				}
			}
			h.srv.SetFaults(gcapitest.Faults{})
			imgs := h.waitSettled(len(groups))
			for _, img := range imgs {
				if img.State != state.Finished {
					t.Errorf("image %d (%s) is %s (%s); want finished", img.ID, img.Key, img.State, img.LastError)
				}
			}
			if len(imgs) != len(groups) {
				t.Errorf("state holds %d images; want %d", len(imgs), len(groups))
			}
			h.checkArchive(len(groups))
			t.Logf("%d crash points", crashes)
		})
	}
}

func sortFiles(fs []File) []File {
	for i := range fs {
		for j := i + 1; j < len(fs); j++ {
			if fs[j].Rel < fs[i].Rel {
				fs[i], fs[j] = fs[j], fs[i]
			}
		}
	}
	return fs
}

// TestCrashAtEveryEvent starts from scratch for each crash point n: one
// run killed at its n-th event, then one clean run on the reopened state
// file, then the exactly-once assertions. Every event of the run is a
// crash point with GCINGEST_SOAK=1; otherwise every fifth.
func TestCrashAtEveryEvent(t *testing.T) {
	stride := 5
	if os.Getenv("GCINGEST_SOAK") != "" {
		stride = 1
	}
	setup := func(t *testing.T) (*harness, []Group) {
		h := newHarness(t, gcapitest.Options{Seed: 5}, "move")
		var groups []Group
		for i := range 3 {
			rel := fmt.Sprintf("d%d/img.mha", i)
			groups = append(groups, h.group(KindSingle, rel, h.write(rel, gcapitest.SampleMHA(int64(i), 4, 4, 2))))
		}
		hdr, raw := gcapitest.SampleMHDPair(9, 4, 4, 2, "p.raw")
		groups = append(groups, h.group(KindMHD, "m/p.mhd", h.write("m/p.mhd", hdr), h.write("m/p.raw", raw)))
		big := gcapitest.SampleMHA(4, 1024, 1024, 6) // 6 MiB: several parts
		groups = append(groups, h.group(KindSingle, "big.mha", h.write("big.mha", big)))
		return h, groups
	}
	// Count the events of an uninterrupted run.
	h, groups := setup(t)
	counter := &crasher{n: 1 << 30}
	runCrashing(t, h, groups, counter)
	total := counter.seen
	for n := 1; n <= total; n += stride {
		t.Run(fmt.Sprintf("event %d of %d", n, total), func(t *testing.T) {
			h, groups := setup(t)
			runCrashing(t, h, groups, &crasher{n: n})
			h.reopen()
			runCrashing(t, h, groups, nil)
			imgs := h.waitSettled(len(groups))
			for _, img := range imgs {
				if img.State != state.Finished {
					t.Errorf("image %d (%s) is %s (%s); want finished", img.ID, img.Key, img.State, img.LastError)
				}
			}
			h.checkArchive(len(groups))
			if n := h.strays(); n > 2 {
				t.Errorf("%d uploads the agent never learnt of left Initialized; one crash with 2 workers loses at most 2", n)
			}
		})
	}
}

// runCrashing submits groups to a pipeline and runs it until every image is
// settled or, with a crasher, until the crasher's event, where the run
// stops on the spot as a killed process would.
func runCrashing(t *testing.T, h *harness, groups []Group, c *crasher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := h.config()
	cfg.PartSize = 5 << 20
	cfg.Concurrency = 2
	api := h.learning(h.api)
	if c != nil {
		c.cancel = cancel
		cfg.BeforeStep = func(uint64, state.State) error { return c.tick() }
		api = h.learning(crashAPI{API: h.api, c: c})
	}
	p := NewPipeline(cfg, h.store, api, nil)
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	for _, g := range groups {
		if err := p.Submit(ctx, g); err != nil && ctx.Err() == nil {
			t.Fatal(err)
		}
	}
	// A run without a crash must settle everything; bounded, so that an
	// image left behind fails the test with its state instead of hanging.
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	err := waitDone(wctx, h.store, len(groups))
	cancel()
	if rerr := <-errc; rerr != nil {
		t.Fatal(rerr)
	}
	if c == nil && err != nil {
		imgs, _ := h.store.List()
		t.Fatalf("not settled within a minute: %s", describe(imgs))
	}
}
