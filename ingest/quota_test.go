package ingest

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/state"
)

// An image blocked by the upload quota keeps the upload it recorded: each
// attempt resumes it (GET, list parts, presign the missing ones), none
// aborts it or creates another, and once space frees the same upload
// finishes and the image lands.
func TestQuotaResumesRecordedUpload(t *testing.T) {
	const quota = 64
	h := newHarness(t, gcapitest.Options{QuotaBytes: quota}, "keep")
	// Another upload of the account fills the quota: completed, never
	// imported, it counts until the server's cleanup deletes it.
	filler := bytes.Repeat([]byte{1}, quota)
	if _, err := h.api.UploadFile(context.Background(), gcapi.FileUpload{Filename: "filler.bin", Body: bytes.NewReader(filler), Size: quota}); err != nil {
		t.Fatal(err)
	}
	// The image's upload is made a few hours later, so that the cleanup
	// that deletes the filler leaves it alone.
	h.srv.Advance(3 * time.Hour)
	g := h.group(KindSingle, "a/ct.mha", h.write("a/ct.mha", gcapitest.SampleMHA(1, 8, 8, 4)))
	p := h.pipeline(h.config())
	stop := start(p)
	defer stop()
	if err := p.Submit(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	h.waitImage("retrying, 4 attempts made", func(img state.Image) bool { return img.State == state.Retrying && img.Attempts >= 4 })
	before := h.srv.Stats()
	if got, want := before.UploadCreates, int64(2); got != want {
		t.Errorf("upload creates while blocked: got %d, want %d (the filler and one for the image)", got, want)
	}
	if before.Aborts != 0 {
		t.Errorf("aborts while blocked: got %d, want 0", before.Aborts)
	}
	h.srv.Advance(22 * time.Hour) // the filler is over a day old: deleted, space freed
	img := h.waitImage("finished", func(img state.Image) bool { return img.State == state.Finished })
	after := h.srv.Stats()
	if got, want := after.UploadCreates, int64(2); got != want {
		t.Errorf("upload creates in all: got %d, want %d", got, want)
	}
	if after.Aborts != 0 {
		t.Errorf("aborts in all: got %d, want 0", after.Aborts)
	}
	if img.ImagePK == "" {
		t.Errorf("finished without an image pk: %+v", img)
	}
}
