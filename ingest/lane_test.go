package ingest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/state"
)

// A steady backlog costs the protocol's minimum in requests per image:
// create the upload, presign its part, PUT it, complete it, create the
// item, PATCH it, and one look that finds the value (gcapi's own flow
// has the same seven, without the look). At most 7.5 on average, counted
// from the fake's request log: no walk of the account's upload sessions,
// no listing of the archive per look, no look before an import could be
// done.
func TestBacklogCostsTheProtocolsRequests(t *testing.T) {
	h := newHarness(t, gcapitest.Options{ImportDelay: 50 * time.Millisecond}, "keep")
	const n = 120
	var groups []Group
	for i := range n {
		rel := fmt.Sprintf("d%03d/img.mha", i)
		groups = append(groups, h.group(KindSingle, rel, h.write(rel, gcapitest.SampleMHA(int64(i), 4, 4, 2))))
	}
	cfg := h.config()
	cfg.PollInterval = 200 * time.Millisecond // an import of 50 ms is done at the first look
	imgs, ok := h.runFor(cfg, time.Minute, groups...)
	if !ok {
		t.Fatalf("not settled: %s", describe(imgs))
	}
	h.checkArchive(n)
	reqs := h.srv.Requests()
	kinds := map[string]int{}
	for _, r := range reqs {
		switch {
		case strings.HasPrefix(r.Path, "/api/v1/cases/upload-sessions/"):
			kinds["sessions"]++
		case r.Method == "GET" && r.Path == "/api/v1/archives/items/":
			kinds["archive listings"]++
		case r.Method == "GET" && strings.HasPrefix(r.Path, "/api/v1/archives/items/"):
			kinds["item looks"]++
		}
	}
	per := float64(len(reqs)) / n
	t.Logf("%.2f requests per image", per)
	if per > 7.5 {
		t.Errorf("%.2f requests per image (%d for %d; %v); want at most 7.5", per, len(reqs), n, kinds)
	}
	if kinds["sessions"] > 0 {
		t.Errorf("%d upload-session requests for imports that were all done at the first look; want none", kinds["sessions"])
	}
}

// forgetfulPatch answers a PATCH of item values as the server would,
// without sending it: the import the server would have started never
// happens (as for uploads the server lost, or expired before an import
// took them).
type forgetfulPatch struct{ API }

func (a forgetfulPatch) UpdateArchiveItem(ctx context.Context, pk string, values []gcapi.ValueUpdate) (*gcapi.ArchiveItem, error) {
	return a.API.ArchiveItem(ctx, pk)
}

// Uploads that expired while the agent was stopped, of an image whose
// attach went out but whose import never came, are sent again as soon as
// the evidence is in (the uploads are gone, no session of ours builds
// them, the item does not show them, for 2 x PollMax), not after the
// import deadline (hours): the image lands within seconds of the restart.
func TestExpiredUploadsOfALostImportAreSentAgainSoon(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	g := h.group(KindSingle, "a/ct.mha", h.write("a/ct.mha", gcapitest.SampleMHA(1, 8, 8, 4)))
	cfg := h.config()
	cfg.ImportTimeout = 3 * time.Hour // the default: far beyond this test
	p := NewPipeline(cfg, h.store, forgetfulPatch{h.learning(h.api)}, nil)
	stop := start(p)
	if err := p.Submit(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the image importing", func() bool {
		img, err := h.store.Get(1)
		return err == nil && img.State == state.Importing
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	h.srv.Advance(25 * time.Hour)
	h.srv.ExpireUploads() // the server's daily cleanup, while the agent was down

	imgs, ok := h.runFor(cfg, 20*time.Second)
	if !ok || imgs[0].State != state.Finished || imgs[0].Resent != 1 {
		t.Fatalf("got %s (resent %d); want finished within seconds, sent again once", describe(imgs), imgs[0].Resent)
	}
	h.checkArchive(1)
}

// A record the operator dismissed (gcingest forget) is not retried: it
// stays dismissed, and retry says why.
func TestRetryRefusesADismissedRecord(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	h.srv.SetFaults(gcapitest.Faults{FailImport: func([]string) string { return "corrupt image" }})
	g := h.group(KindSingle, "a/ct.mha", h.write("a/ct.mha", gcapitest.SampleMHA(1, 8, 8, 4)))
	imgs, ok := h.runFor(h.config(), 20*time.Second, g)
	if !ok || imgs[0].State != state.Failed {
		t.Fatalf("got %s; want failed", describe(imgs))
	}
	if _, err := h.store.Dismiss(imgs[0].ID); err != nil {
		t.Fatal(err)
	}
	_, err := Retry(context.Background(), h.store, []uint64{imgs[0].ID}, nil)
	if err == nil || !strings.Contains(err.Error(), "dismissed") {
		t.Errorf("retry of a dismissed record: %v; want refused, naming the state", err)
	}
	if img, _ := h.store.Get(imgs[0].ID); img.State != state.Dismissed {
		t.Errorf("record is %s after the refused retry; want dismissed", img.State)
	}
}
