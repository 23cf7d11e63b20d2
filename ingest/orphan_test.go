package ingest

import (
	"context"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

// An Initialized upload nobody recorded is aborted only when it can be
// ours: created after our intent to create one (less the clock skew). An
// older one with the same name belongs to someone else using the account.
func TestOrphanScanLeavesOthersUploadsAlone(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	ctx := context.Background()
	foreign, err := h.api.CreateUpload(ctx, "scan.mha")
	if err != nil {
		t.Fatal(err)
	}
	p := h.pipeline(h.config())
	status := func() string {
		t.Helper()
		u, err := h.api.Upload(ctx, foreign.PK)
		if err != nil {
			t.Fatal(err)
		}
		return u.Status
	}

	if err := p.abortOrphans(ctx, "scan.mha", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := status(); got != gcapi.UploadInitialized {
		t.Errorf("an upload created an hour before our intent was %s; want it left Initialized", got)
	}
	if err := p.abortOrphans(ctx, "other.mha", time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := status(); got != gcapi.UploadInitialized {
		t.Errorf("an upload of another file name was %s; want it left Initialized", got)
	}
	if err := p.abortOrphans(ctx, "scan.mha", time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := status(); got != gcapi.UploadAborted {
		t.Errorf("an unrecorded upload created after our intent was %s; want it aborted", got)
	}
}
