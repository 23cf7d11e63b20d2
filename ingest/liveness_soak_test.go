package ingest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/state"
)

// TestLiveness runs the pipeline against the fake with its real-server
// behaviours on (a small upload quota, sessions failing after the build,
// uploads expiring while the agent is down, S3 part timeouts, titles the
// server trims, 20 % request faults), killing it at random moments (the
// crash tests' mechanism). Every image must end terminal (finished, or
// failed with the reason) within a bounded number of runs, none lost, none
// landed twice, and nothing of another agent's on the same account (its
// uploads of the same file names, its item) touched. GCINGEST_SOAK=1 runs
// longer.
func TestLiveness(t *testing.T) {
	images, rounds := 8, 12
	if os.Getenv("GCINGEST_SOAK") != "" {
		images, rounds = 30, 60
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 1))
	size := len(gcapitest.SampleMHA(0, 4, 4, 2))
	h := newHarness(t, gcapitest.Options{Seed: int64(seed), QuotaBytes: int64(2 * size)}, "move")
	h.watch.Title = "  {path} [{hash}]\u200f " // trimmed by the server
	bad := func(names []string) string {
		for _, n := range names {
			if strings.Contains(n, "bad") {
				return "Segmentation values out of range"
			}
		}
		return ""
	}
	faults := gcapitest.Faults{Rate5xx: 0.06, Rate500: 0.04, Rate429: 0.04, RateReset: 0.04,
		RateS3RequestTimeout: 0.01, RateS3ExpiredToken: 0.01, RetryAfter: time.Millisecond, FailLinkedCheck: bad}
	h.srv.SetFaults(faults)
	var groups []Group
	for i := range images {
		name := "img.mha"
		if i%4 == 3 {
			name = "bad.mha"
		}
		rel := fmt.Sprintf("d%02d/%s", i, name)
		groups = append(groups, h.group(KindSingle, rel, h.write(rel, gcapitest.SampleMHA(int64(i), 4, 4, 2))))
	}
	// Another agent on the same account, with uploads of the same file
	// names (some Initialized, some Completed) and an item of its own:
	// nothing of it may be touched.
	other := newOtherAgent(t, h.srv, testArchive, testIface)
	other.act("img.mha", "bad.mha")
	cfg := h.config()
	cfg.ImportTimeout = 300 * time.Millisecond
	run := func(c *crasher, limit time.Duration) bool {
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		defer cancel()
		cfg := cfg
		var api API = h.api
		if c != nil {
			c.cancel = cancel
			cfg.BeforeStep = func(uint64, state.State) error { return c.tick() }
			api = crashAPI{API: h.api, c: c}
		}
		p := NewPipeline(cfg, h.store, api, nil)
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
		return done
	}
	crashes := 0
	for r := 0; r < rounds; r++ {
		if run(&crasher{n: 1 + rnd.IntN(150)}, 5*time.Second) {
			break
		}
		crashes++
		h.reopen()
		if rnd.IntN(4) == 0 {
			other.check()
			h.srv.ExpireUploads() // the agent was down for a day
			other.forget()
			other.act("img.mha", "bad.mha")
		}
	}
	// The bound: a day later (uploads a crash left unrecorded fill the
	// quota until the server's cleanup), one more run without crashes
	// settles everything.
	other.check()
	h.srv.ExpireUploads()
	other.forget()
	other.act("img.mha", "bad.mha")
	if !run(nil, 20*time.Second) {
		imgs, _ := h.store.List()
		t.Fatalf("not settled 20s after the last crash: %s", describe(imgs))
	}
	imgs, err := h.store.List()
	if err != nil {
		t.Fatal(err)
	}
	quota := 0
	for _, r := range h.srv.Requests() {
		if r.Status == 403 {
			quota++
		}
	}
	t.Logf("%d crashes, %d quota refusals, %d requests", crashes, quota, len(h.srv.Requests()))
	if len(imgs) != len(groups) {
		t.Errorf("state holds %d records for %d images", len(imgs), len(groups))
	}
	landed := map[string]bool{}
	for _, img := range imgs {
		switch {
		case img.State == state.Failed && img.LastError == "":
			t.Errorf("image %s failed without a reason", img.Key)
		case img.State == state.Failed && !strings.Contains(img.Key, "bad"):
			t.Errorf("image %s failed: %s", img.Key, img.LastError)
		case img.State == state.Finished || img.State == state.Duplicate:
			if strings.Contains(img.Key, "bad") {
				t.Errorf("image %s is %s; the server refuses it", img.Key, img.State)
			}
			landed[normalizeTitle(img.Title)] = true
		case img.State != state.Failed:
			t.Errorf("image %s is %s", img.Key, img.State)
		}
	}
	other.check()
	seen := map[string]int{}
	for _, it := range h.srv.Items(testArchive) {
		if it.PK == other.item {
			continue
		}
		seen[it.Title]++
		if landed[it.Title] {
			if v := it.Value(testIface); v == nil || v.Image == nil {
				t.Errorf("item %q holds no image", it.Title)
			}
		}
	}
	for title, n := range seen {
		if n > 1 {
			t.Errorf("title %q is on %d items", title, n)
		}
	}
	for title := range landed {
		if seen[title] != 1 {
			t.Errorf("title %q of a landed image is on %d items", title, seen[title])
		}
	}
}
