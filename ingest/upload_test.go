package ingest

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/state"
)

// learnt records the upload pks a pipeline was told of (its OnCreated ran).
type learnt struct {
	mu       sync.Mutex
	tracking bool
	pks      map[string]bool
}

func (l *learnt) add(pk string) {
	l.mu.Lock()
	l.pks[pk] = true
	l.mu.Unlock()
}

func (l *learnt) has(pk string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pks[pk]
}

// unlearnt reports whether pk is an upload no pipeline of this harness
// was told of: its create's answer never reached the pipeline.
func (l *learnt) unlearnt(pk string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tracking && !l.pks[pk]
}

// learnAPI passes every upload pk that reaches the pipeline's OnCreated to
// l. Put it outside any wrapper that may lose the answer (crashAPI), so
// that what it records is what the pipeline really learnt.
type learnAPI struct {
	API
	l *learnt
}

func (a learnAPI) UploadFile(ctx context.Context, f gcapi.FileUpload) (*gcapi.Upload, error) {
	on := f.OnCreated
	f.OnCreated = func(u *gcapi.Upload) error {
		a.l.add(u.PK)
		if on != nil {
			return on(u)
		}
		return nil
	}
	return a.API.UploadFile(ctx, f)
}

// learning wraps api so that the harness knows which uploads the pipeline
// learnt of.
func (h *harness) learning(api API) API {
	h.learnt.mu.Lock()
	h.learnt.tracking = true
	h.learnt.mu.Unlock()
	return learnAPI{API: api, l: h.learnt}
}

// strays counts the Initialized uploads on the server that no pipeline of
// h learnt of. One crash can lose at most the creates in flight at that
// moment: one per worker.
func (h *harness) strays() int {
	n := 0
	for _, u := range h.srv.Uploads() {
		if u.Status == gcapi.UploadInitialized && h.learnt.unlearnt(u.PK) {
			n++
		}
	}
	return n
}

// sibling returns a second agent on h's account: its own drop folder,
// state file and archive (so its titles do not meet h's), the same server
// and token.
func (h *harness) sibling(archive string) *harness {
	h.t.Helper()
	h.srv.AddArchive(archive, archive)
	dir := h.t.TempDir()
	s := &harness{t: h.t, srv: h.srv, api: h.api, dir: dir, statePath: filepath.Join(dir, "state", "state.db"), learnt: &learnt{pks: map[string]bool{}}}
	s.watch = h.watch
	s.watch.Path, s.watch.Archive = filepath.Join(dir, "drop"), archive
	s.watch.DoneDir, s.watch.FailedDir = filepath.Join(dir, "done"), filepath.Join(dir, "failed")
	for _, d := range []string{s.watch.Path, filepath.Dir(s.statePath)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			h.t.Fatal(err)
		}
	}
	s.open()
	h.t.Cleanup(func() { s.store.Close() })
	return s
}

// hooks lets a test act inside an upload: after its create reached the
// pipeline's side (created, before the pipeline records it when it
// returns an error) and before each part is handed to the pipeline.
type hooks struct {
	API
	created func(*gcapi.Upload) error
	part    func(gcapi.Part) error
	body    func(io.ReaderAt) io.ReaderAt
	aborted func(*gcapi.Upload)
}

func (a hooks) UploadFile(ctx context.Context, f gcapi.FileUpload) (*gcapi.Upload, error) {
	onCreated, onPart := f.OnCreated, f.OnPart
	if a.created != nil {
		f.OnCreated = func(u *gcapi.Upload) error {
			if err := a.created(u); err != nil {
				return err
			}
			return onCreated(u)
		}
	}
	if a.part != nil {
		f.OnPart = func(p gcapi.Part) error {
			if err := a.part(p); err != nil {
				return err
			}
			return onPart(p)
		}
	}
	if a.body != nil {
		f.Body = a.body(f.Body)
	}
	return a.API.UploadFile(ctx, f)
}

func (a hooks) AbortUpload(ctx context.Context, u *gcapi.Upload) (*gcapi.Upload, error) {
	if a.aborted != nil {
		a.aborted(u)
	}
	return a.API.AbortUpload(ctx, u)
}

// gate blocks every read until open is closed or ctx ends.
type gate struct {
	r    io.ReaderAt
	ctx  context.Context
	open chan struct{}
}

func (g gate) ReadAt(b []byte, off int64) (int, error) {
	select {
	case <-g.open:
	case <-g.ctx.Done():
		return 0, g.ctx.Err()
	}
	return g.r.ReadAt(b, off)
}

// Two agents on one account (two state files, the same file names), one of
// them killed right after an upload create and restarted while the other
// is in the middle of sending a file of the same name: the restarted agent
// must not abort (or use) the other's upload, and both land everything.
// The filename-based orphan scan failed this: it took the other agent's
// fresh Initialized "x.mha" for its own lost create and aborted it.
func TestTwoAgentsOneAccountLeaveEachOthersUploadsAlone(t *testing.T) {
	a := newHarness(t, gcapitest.Options{}, "move")
	b := a.sibling("scans-b")
	var groupsA, groupsB []Group
	for _, name := range []string{"x.mha", "y.mha"} {
		groupsA = append(groupsA, a.group(KindSingle, name, a.write(name, gcapitest.SampleMHA(1, 4, 4, 2))))
		groupsB = append(groupsB, b.group(KindSingle, name, b.write(name, gcapitest.SampleMHA(2, 4, 4, 2))))
	}
	var mu sync.Mutex
	abortedBy := map[string][]string{}
	abortRec := func(who string) func(*gcapi.Upload) {
		return func(u *gcapi.Upload) {
			mu.Lock()
			abortedBy[who] = append(abortedBy[who], u.PK)
			mu.Unlock()
		}
	}

	// A dies right after its first create, before recording it.
	ctxA, cancelA := context.WithCancel(context.Background())
	cfgA := a.config()
	cfgA.Concurrency = 1
	crashed := hooks{API: a.api, aborted: abortRec("a"), created: func(*gcapi.Upload) error {
		cancelA()
		return errCrash
	}}
	pa := NewPipeline(cfgA, a.store, a.learning(crashed), nil)
	errc := make(chan error, 1)
	go func() { errc <- pa.Run(ctxA) }()
	// Both recorded in one commit, before either is queued: submitted one
	// at a time, the second could find ctxA cancelled already (the first
	// image's create came first) and never be recorded.
	if err := errorsIn(pa.SubmitAll(ctxA, groupsA)); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	a.reopen()

	// B creates its "x.mha" upload and holds its bytes.
	ctxB, cancelB := context.WithCancel(context.Background())
	defer cancelB()
	open := make(chan struct{})
	bCreated := make(chan string, 4)
	holdB := hooks{API: b.api, aborted: abortRec("b"),
		created: func(u *gcapi.Upload) error { bCreated <- u.PK; return nil },
		body:    func(r io.ReaderAt) io.ReaderAt { return gate{r: r, ctx: ctxB, open: open} },
	}
	cfgB := b.config()
	cfgB.Concurrency = 1
	pb := NewPipeline(cfgB, b.store, b.learning(holdB), nil)
	errB := make(chan error, 1)
	go func() { errB <- pb.Run(ctxB) }()
	for _, g := range groupsB {
		if err := pb.Submit(ctxB, g); err != nil {
			t.Fatal(err)
		}
	}
	var firstB string
	select {
	case firstB = <-bCreated:
	case <-time.After(30 * time.Second):
		t.Fatal("agent B created no upload within 30s")
	}

	// A restarts and lands its images while B's upload is open.
	pa = NewPipeline(a.config(), a.store, a.learning(hooks{API: a.api, aborted: abortRec("a")}), nil)
	stopA := start(pa)
	a.waitSettled(len(groupsA))
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	close(open)
	b.waitSettled(len(groupsB))
	cancelB()
	if err := <-errB; err != nil {
		t.Fatal(err)
	}

	for who, h := range map[string]*harness{"a": a, "b": b} {
		for _, img := range h.waitSettled(2) {
			if img.State != state.Finished {
				t.Errorf("agent %s: image %s is %s (%s); want finished", who, img.Key, img.State, img.LastError)
			}
		}
		for _, pk := range abortedBy[who] {
			if !h.learnt.has(pk) {
				t.Errorf("agent %s aborted upload %s, which it never created", who, pk)
			}
		}
		if n := len(h.srv.Items(h.watch.Archive)); n != 2 {
			t.Errorf("agent %s's archive holds %d items; want 2", who, n)
		}
	}
	for _, u := range a.srv.Uploads() {
		if u.PK == firstB && u.Status == gcapi.UploadAborted {
			t.Errorf("agent B's upload %s (%s) was aborted", u.PK, u.Filename)
		}
		if a.learnt.has(u.PK) && b.learnt.has(u.PK) {
			t.Errorf("upload %s (%s) was used by both agents", u.PK, u.Filename)
		}
	}
}

// A file rewritten while it is sent: the upload under way stops before its
// complete and is aborted (it is ours and holds stale bytes); the new
// content is hashed and sent anew.
func TestFileChangedDuringUploadAbortsTheStaleUpload(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	f := h.write("a.mha", gcapitest.SampleMHA(1, 4, 4, 2))
	var mu sync.Mutex
	var first string
	api := hooks{API: h.api,
		created: func(u *gcapi.Upload) error {
			mu.Lock()
			defer mu.Unlock()
			if first == "" {
				first = u.PK
			}
			return nil
		},
		part: func(gcapi.Part) error {
			mu.Lock()
			defer mu.Unlock()
			if first != "" && !h.learnt.has("rewritten") {
				h.learnt.add("rewritten")
				h.write("a.mha", gcapitest.SampleMHA(2, 4, 4, 3))
			}
			return nil
		},
	}
	p := NewPipeline(h.config(), h.store, h.learning(api), nil)
	stop := start(p)
	if err := p.Submit(context.Background(), h.group(KindSingle, "a.mha", f)); err != nil {
		t.Fatal(err)
	}
	imgs := h.waitSettled(1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if imgs[0].State != state.Finished {
		t.Fatalf("image is %s (%s); want finished", imgs[0].State, imgs[0].LastError)
	}
	if got, want := imgs[0].Files[0].Size, int64(len(gcapitest.SampleMHA(2, 4, 4, 3))); got != want {
		t.Errorf("recorded size %d; want %d (the rewritten content)", got, want)
	}
	for _, u := range h.srv.Uploads() {
		if u.PK == first && u.Status != gcapi.UploadAborted {
			t.Errorf("the upload of the stale content is %s; want %s", u.Status, gcapi.UploadAborted)
		}
	}
	h.checkArchive(1)
}

// S3 refusing part PUTs with 400 RequestTimeout or ExpiredToken is healed
// by trying again: every image lands.
func TestS3TimeoutsAndExpiredTokensAreTransient(t *testing.T) {
	h := newHarness(t, gcapitest.Options{Seed: 3}, "keep")
	h.srv.SetFaults(gcapitest.Faults{RateS3RequestTimeout: 0.25, RateS3ExpiredToken: 0.25})
	p := h.pipeline(h.config())
	stop := start(p)
	for i := range 6 {
		rel := fmt.Sprintf("s%d.mha", i)
		if err := p.Submit(context.Background(), h.group(KindSingle, rel, h.write(rel, gcapitest.SampleMHA(int64(i), 4, 4, 2)))); err != nil {
			t.Fatal(err)
		}
	}
	imgs := h.waitSettled(6)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	h.srv.SetFaults(gcapitest.Faults{})
	for _, img := range imgs {
		if img.State != state.Finished {
			t.Errorf("image %s is %s (%s); want finished", img.Key, img.State, img.LastError)
		}
	}
	if st := h.srv.Stats(); st.Faults == 0 {
		t.Error("no fault was injected; the test proves nothing")
	}
	h.checkArchive(6)
}

// A file name over the server's 128 characters is shortened for the
// upload, its extension kept; the image lands.
func TestLongFilenameIsShortenedForTheUpload(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	name := strings.Repeat("long-name-", 20) + ".mha"
	p := h.pipeline(h.config())
	stop := start(p)
	if err := p.Submit(context.Background(), h.group(KindSingle, name, h.write(name, gcapitest.SampleMHA(1, 4, 4, 2)))); err != nil {
		t.Fatal(err)
	}
	imgs := h.waitSettled(1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if imgs[0].State != state.Finished {
		t.Fatalf("image is %s (%s); want finished", imgs[0].State, imgs[0].LastError)
	}
	got := imgs[0].Uploads[0].Filename
	if len(got) > 128 || !strings.HasSuffix(got, ".mha") {
		t.Errorf("upload filename %q (%d bytes); want at most 128, ending .mha", got, len(got))
	}
	h.checkArchive(1)
}

func TestUploadName(t *testing.T) {
	long := strings.Repeat("x", 150)
	for _, tc := range []struct{ in, ext string }{
		{"short.mha", ".mha"},
		{long + ".nii.gz", ".nii.gz"},
		{long + ".MHA", ".MHA"},
		{long, ""},
		{"bad-\xff-utf8.mha", ".mha"},
		{long + "\xfe.tif", ".tif"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got := uploadName(tc.in)
			if len(got) > maxUploadName || !utf8.ValidString(got) || !strings.HasSuffix(got, tc.ext) {
				t.Errorf("uploadName = %q (%d bytes); want valid UTF-8, at most %d bytes, ending %q", got, len(got), maxUploadName, tc.ext)
			}
			if uploadName(got) != got {
				t.Errorf("uploadName(%q) = %q; want it unchanged", got, uploadName(got))
			}
		})
	}
	if a, b := uploadName(long+"1.mha"), uploadName(long+"2.mha"); a == b {
		t.Errorf("two long names differing at the end both became %q; want them distinct", a)
	}
}

// An upload create answered 500 after the server acted (gcapi reports it
// as ErrAmbiguous and never repeats it): the next attempt creates a new
// upload, and the stray one, whose pk we never learnt, is left alone for
// the server's 24 h cleanup. The old orphan scan aborted any Initialized
// upload of the same name, another agent's included.
func TestAmbiguousUploadCreateIsNotRetriedInPlaceNorItsStrayTouched(t *testing.T) {
	h := newHarness(t, gcapitest.Options{Seed: 1}, "keep")
	h.srv.SetFaults(gcapitest.Faults{Rate500: 1, PathPrefix: "/api/v1/uploads/"})
	var mu sync.Mutex
	var aborted []string
	api := hooks{API: h.api, aborted: func(u *gcapi.Upload) {
		mu.Lock()
		aborted = append(aborted, u.PK)
		mu.Unlock()
	}, created: func(*gcapi.Upload) error { return nil }}
	// The first create gets its 500; from then on the server answers.
	faulted := func() bool {
		for _, r := range h.srv.Requests() {
			if r.Fault == "500" {
				return true
			}
		}
		return false
	}
	p := NewPipeline(h.config(), h.store, h.learning(api), nil)
	stop := start(p)
	if err := p.Submit(context.Background(), h.group(KindSingle, "a.mha", h.write("a.mha", gcapitest.SampleMHA(1, 4, 4, 2)))); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "a create answered 500", faulted)
	h.srv.SetFaults(gcapitest.Faults{})
	imgs := h.waitSettled(1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if imgs[0].State != state.Finished {
		t.Fatalf("image is %s (%s); want finished", imgs[0].State, imgs[0].LastError)
	}
	if s := h.srv.Stats(); s.UploadCreates < 2 {
		t.Errorf("%d upload creates; want a new one after the ambiguous answer", s.UploadCreates)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(aborted) > 0 {
		t.Errorf("aborted %v; want nothing aborted (the stray's pk was never learnt)", aborted)
	}
	if h.strays() == 0 {
		t.Error("no stray upload left Initialized; the test proves nothing")
	}
	h.checkArchive(1)
}
