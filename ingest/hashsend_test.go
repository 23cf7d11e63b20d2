package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/state"
)

// partSeen tells, once, that the server accepted a part of an upload.
type partSeen struct {
	API
	once *sync.Once
	seen chan struct{}
}

func (a partSeen) UploadFile(ctx context.Context, f gcapi.FileUpload) (*gcapi.Upload, error) {
	onPart := f.OnPart
	f.OnPart = func(p gcapi.Part) error {
		a.once.Do(func() { close(a.seen) })
		if onPart != nil {
			return onPart(p)
		}
		return nil
	}
	return a.API.UploadFile(ctx, f)
}

// holdHash holds every hash taken while a file is sent until release is
// closed (or a minute has passed: the test then fails, not hangs), and
// reports on held whether any was.
func holdHash(t *testing.T, release <-chan struct{}) (held func() bool) {
	t.Helper()
	var mu sync.Mutex
	n := 0
	testHookHashWhileSent = func() {
		mu.Lock()
		n++
		mu.Unlock()
		select {
		case <-release:
		case <-time.After(time.Minute):
			t.Error("the hash waited a minute for a part to be sent: the parts wait for the hash")
		}
	}
	t.Cleanup(func() { testHookHashWhileSent = nil })
	return func() bool {
		mu.Lock()
		defer mu.Unlock()
		return n > 0
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// A file of several parts starts leaving before it is hashed (issue 22: a
// 2 GiB file waited 1.7 s for its hash): the hash is held until the
// server accepted a part, and the image lands with the hash of what was
// sent in its record and its title.
func TestBigFileLeavesBeforeItsHash(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	content := gcapitest.SampleMHA(7, 1024, 1024, 12) // 12 MiB: three parts of 5 MiB
	release := make(chan struct{})
	held := holdHash(t, release)
	api := partSeen{API: h.learning(h.api), once: &sync.Once{}, seen: make(chan struct{})}
	go func() {
		select {
		case <-api.seen:
		case <-time.After(time.Minute):
		}
		close(release)
	}()
	cfg := h.config()
	cfg.PartSize = 5 << 20
	cfg.PartConcurrency = 1
	p := NewPipeline(cfg, h.store, api, nil)
	if err := p.Submit(context.Background(), h.group(KindSingle, "big.mha", h.write("big.mha", content))); err != nil {
		t.Fatal(err)
	}
	stop := start(p)
	imgs := h.waitSettled(1)
	stop()
	if !held() {
		t.Fatal("the file was hashed before it was sent, not while")
	}
	img := imgs[0]
	if img.State != state.Finished {
		t.Fatalf("state %s (%s); want finished", img.State, img.LastError)
	}
	want := sha256Hex(content)
	if img.Files[0].SHA256 != want {
		t.Errorf("recorded hash %s; want %s", img.Files[0].SHA256, want)
	}
	if img.Title != "big.mha ["+titleHash(img.Files)+"]" {
		t.Errorf("title %q; want big.mha [%s]", img.Title, titleHash(img.Files))
	}
	got, err := h.srv.ImageContent(img.ImagePK)
	if err != nil || !bytes.Equal(got, content) {
		t.Errorf("server holds %d bytes (%v); want the file's %d", len(got), err, len(content))
	}
	h.checkArchive(1)
}

// Content the archive holds already, found only once the hash is done
// (the state file was lost): the parts went, but the upload is aborted,
// not completed, and no second item is made.
func TestBigDuplicateFoundAfterItsHash(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	content := gcapitest.SampleMHA(8, 1024, 1024, 11)
	cfg := h.config()
	cfg.PartSize = 5 << 20
	g := h.group(KindSingle, "dup.mha", h.write("dup.mha", content))
	p := h.pipeline(cfg)
	p.Submit(context.Background(), g)
	stop := start(p)
	h.waitSettled(1)
	stop()

	h.loseState()
	p = h.pipeline(cfg)
	p.Submit(context.Background(), g)
	stop = start(p)
	imgs := h.waitSettled(1)
	stop()
	if imgs[0].State != state.Duplicate {
		t.Fatalf("state %s (%s); want duplicate", imgs[0].State, imgs[0].LastError)
	}
	if imgs[0].Files[0].SHA256 != sha256Hex(content) {
		t.Errorf("recorded hash %s; want the file's", imgs[0].Files[0].SHA256)
	}
	var completed, aborted int
	for _, u := range h.srv.Uploads() {
		switch u.Status {
		case gcapi.UploadCompleted:
			completed++
		case gcapi.UploadAborted:
			aborted++
		}
	}
	if aborted != 1 {
		t.Errorf("%d uploads aborted; want the second agent's one", aborted)
	}
	h.checkArchive(1)
}

// A file changed while it is hashed and sent is not completed: it is
// hashed again and its new content lands.
func TestBigFileChangedWhileHashed(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	first := gcapitest.SampleMHA(9, 1024, 1024, 11)
	newer := gcapitest.SampleMHA(10, 1024, 1024, 11)
	g := h.group(KindSingle, "ch.mha", h.write("ch.mha", first))
	var once sync.Once
	testHookHashWhileSent = func() {
		once.Do(func() {
			if err := os.WriteFile(g.Files[0].Path, newer, 0o644); err != nil {
				t.Error(err)
			}
			os.Chtimes(g.Files[0].Path, time.Now(), time.Now().Add(time.Hour))
		})
	}
	t.Cleanup(func() { testHookHashWhileSent = nil })
	cfg := h.config()
	cfg.PartSize = 5 << 20
	p := h.pipeline(cfg)
	p.Submit(context.Background(), g)
	stop := start(p)
	imgs := h.waitSettled(1)
	stop()
	if imgs[0].State != state.Finished {
		t.Fatalf("state %s (%s); want finished", imgs[0].State, imgs[0].LastError)
	}
	if imgs[0].Files[0].SHA256 != sha256Hex(newer) {
		t.Errorf("recorded hash is not the new content's")
	}
	got, err := h.srv.ImageContent(imgs[0].ImagePK)
	if err != nil || !bytes.Equal(got, newer) {
		t.Errorf("server holds %d bytes (%v); want the changed file's %d", len(got), err, len(newer))
	}
	h.checkArchive(1)
}
