package ingest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/state"
)

// With a quarter of the requests faulted (5xx before acting, resets after
// acting, 429 with Retry-After), 40 images all land within two minutes,
// run after run, at the agent's real pacing: the client's own retries and
// the pipeline's backoff as configured by default. An image unlucky
// enough to meet several faults in a row must not be left waiting minutes
// while the server answers every other image (pacing.go). Ten runs, side
// by side (they mostly wait): GCINGEST_SOAK=1 makes it thirty.
func TestIntermittentFaultsEveryImageLands(t *testing.T) {
	runs := 10
	if os.Getenv("GCINGEST_SOAK") != "" {
		runs = 30
	}
	const images, limit = 40, 2 * time.Minute
	// The runs go side by side in goroutines of their own (they mostly
	// wait), not as parallel subtests, which -parallel would bound to
	// the number of CPUs.
	type run struct {
		h      *harness
		groups []Group
	}
	var rs []run
	for seed := range runs {
		h := newHarness(t, gcapitest.Options{Seed: int64(seed)}, "keep")
		h.srv.SetFaults(gcapitest.Faults{Rate5xx: 0.10, Rate429: 0.07, RateReset: 0.08, RetryAfter: time.Second})
		var groups []Group
		for i := range images {
			rel := fmt.Sprintf("d%02d/img.mha", i)
			groups = append(groups, h.group(KindSingle, rel, h.write(rel, gcapitest.SampleMHA(int64(i), 4, 4, 2))))
		}
		rs = append(rs, run{h, groups})
	}
	var wg sync.WaitGroup
	for seed, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := landAll(r.h, r.groups, limit); err != nil {
				t.Errorf("seed %d: %v", seed, err)
			}
		}()
	}
	wg.Wait()
}

// landAll runs the agent's pipeline as the agent makes it (the client's
// default retry policy, the default pacing: retries 5 s ... 10 min, polls
// every second) on groups until every image is finished, or limit.
func landAll(h *harness, groups []Group, limit time.Duration) error {
	api, err := gcapi.New(h.srv.URL, h.srv.Token(), gcapi.WithHTTPClient(h.srv.Client()))
	if err != nil {
		return err
	}
	cfg := PipelineConfig{Watches: []Watch{h.watch}, SpoolDir: h.config().SpoolDir}
	p := NewPipeline(cfg, h.store, h.learning(api), nil)
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	if err := errorsIn(p.SubmitAll(ctx, groups)); err != nil {
		cancel()
		<-errc
		return err
	}
	t0 := time.Now()
	err = waitDone(ctx, h.store, len(groups))
	took := time.Since(t0)
	cancel()
	if rerr := <-errc; rerr != nil {
		return fmt.Errorf("Run: %w", rerr)
	}
	imgs, lerr := h.store.List()
	if lerr != nil {
		return lerr
	}
	var open []state.Image
	for _, img := range imgs {
		if img.State != state.Finished {
			open = append(open, img)
		}
	}
	if err != nil || len(open) > 0 {
		return fmt.Errorf("%d of %d finished within %s; the others: %s", len(imgs)-len(open), len(groups), limit, describe(open))
	}
	h.t.Logf("all %d landed in %s (%d requests, %d faulted)", len(groups), took.Round(time.Second), len(h.srv.Requests()), h.srv.Stats().Faults)
	h.checkArchive(len(groups))
	return nil
}

// errorsIn returns the first non-nil error of errs.
func errorsIn(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
