package ingest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/state"
)

// runFor submits groups to a pipeline with cfg and waits up to d for every
// record to settle (nothing left to do); it returns the records and whether
// they settled. A record that never settles is the failure these tests
// look for, so it is reported, not fatal.
func (h *harness) runFor(cfg PipelineConfig, d time.Duration, groups ...Group) ([]state.Image, bool) {
	h.t.Helper()
	p := h.pipeline(cfg)
	stop := start(p)
	defer func() {
		if err := stop(); err != nil {
			h.t.Error(err)
		}
	}()
	for _, g := range groups {
		if err := p.Submit(context.Background(), g); err != nil {
			h.t.Fatal(err)
		}
	}
	deadline := time.Now().Add(d)
	for {
		all, err := h.store.List()
		if err != nil {
			h.t.Fatal(err)
		}
		settled := 0
		for _, img := range all {
			if !img.Unfinished() {
				settled++
			}
		}
		if settled == len(all) && len(all) > 0 {
			return all, true
		}
		if time.Now().After(deadline) {
			return all, false
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not waiting for time
	}
}

func describe(imgs []state.Image) string {
	var s []string
	for _, img := range imgs {
		s = append(s, fmt.Sprintf("%d %s: %s (%s; waiting for %q until %s)", img.ID, img.Key, img.State, img.LastError,
			img.WaitingFor, img.Until.Format(time.RFC3339Nano)))
	}
	return strings.Join(s, "; ")
}

// A session that fails in the linked check after a successful build (its
// uploads already deleted, so user_uploads is empty) fails the image with
// the server's message, through the session captured while it built.
func TestLinkedCheckFailureFailsTheImage(t *testing.T) {
	h := newHarness(t, gcapitest.Options{ImportDelay: 300 * time.Millisecond}, "keep")
	h.srv.SetFaults(gcapitest.Faults{FailLinkedCheck: func([]string) string { return "Segmentation values out of range" }})
	g := h.group(KindSingle, "a/ct.mha", h.write("a/ct.mha", gcapitest.SampleMHA(1, 8, 8, 4)))
	imgs, ok := h.runFor(h.config(), 20*time.Second, g)
	if !ok || imgs[0].State != state.Failed || !strings.Contains(imgs[0].LastError, "Segmentation values out of range") {
		t.Fatalf("got %s; want failed with the server's message", describe(imgs))
	}
}

// Without a session captured (the build was over before the first look),
// the deadline still ends the wait: the uploads were consumed, the value
// never came; sending them again fails the same way, and then the image
// fails, pointing at the notifications.
func TestLinkedCheckFailureWithoutSessionEndsAtDeadline(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	h.srv.SetFaults(gcapitest.Faults{FailLinkedCheck: func([]string) string { return "Segmentation values out of range" }})
	g := h.group(KindSingle, "a/ct.mha", h.write("a/ct.mha", gcapitest.SampleMHA(1, 8, 8, 4)))
	cfg := h.config()
	cfg.ImportTimeout = 300 * time.Millisecond
	imgs, ok := h.runFor(cfg, 20*time.Second, g)
	if !ok || imgs[0].State != state.Failed {
		t.Fatalf("got %s; want failed", describe(imgs))
	}
	if msg := imgs[0].LastError; !strings.Contains(msg, "Segmentation values out of range") && !strings.Contains(msg, "notifications") {
		t.Errorf("last error %q names neither the server's message nor the notifications", msg)
	}
}

// A file value whose copy fails leaves only a notification: at its
// deadline the folder fails, saying where to look.
func TestFileCopyFailureFailsAtDeadline(t *testing.T) {
	h := newFolderHarness(t, gcapitest.Options{})
	h.srv.SetFaults(gcapitest.Faults{FailImport: func(names []string) string {
		if len(names) == 1 && strings.HasSuffix(names[0], ".pdf") {
			return "could not copy"
		}
		return ""
	}})
	g := h.folder("case1", map[string][]byte{"ct.mha": gcapitest.SampleMHA(1, 8, 8, 4), "report.pdf": pdf('r')})
	cfg := h.config()
	cfg.ImportTimeout = 300 * time.Millisecond
	imgs, ok := h.runFor(cfg, 20*time.Second, g)
	if !ok || imgs[0].State != state.Failed {
		t.Fatalf("got %s; want failed (the report never arrives)", describe(imgs))
	}
	for _, want := range []string{ifaceReport, "not attached", "see your notifications on Grand Challenge"} {
		if !strings.Contains(imgs[0].LastError, want) {
			t.Errorf("last error %q lacks %q", imgs[0].LastError, want)
		}
	}
	if len(h.srv.Notifications()) == 0 {
		t.Error("the server sent no notification; the test does not test what it says")
	}
}

// Uploads that expire while the agent is stopped between upload and attach
// are sent again, to the same item.
func TestExpiredUploadsAreSentAgainToTheSameItem(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	hdr, raw := gcapitest.SampleMHDPair(2, 8, 8, 2, "pair.raw")
	g := h.group(KindMHD, "b/pair.mhd", h.write("b/pair.mhd", hdr), h.write("b/pair.raw", raw))

	// First run: stop as the item step begins (every upload Completed).
	ctx, cancel := context.WithCancel(context.Background())
	c := &crasher{n: 1 << 30, cancel: cancel}
	cfg := h.config()
	cfg.BeforeStep = func(_ uint64, st state.State) error {
		if st == state.Uploaded {
			c.mu.Lock()
			c.n = 0 // dies here
			c.mu.Unlock()
		}
		return c.tick()
	}
	p := h.pipeline(cfg)
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	if err := p.Submit(ctx, g); err != nil {
		t.Fatal(err)
	}
	<-ctx.Done()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	h.reopen()
	// The item was made by hand meanwhile? No: the day passes.
	h.srv.ExpireUploads()

	imgs, ok := h.runFor(h.config(), 20*time.Second)
	if !ok || imgs[0].State != state.Finished {
		t.Fatalf("got %s; want finished after sending the uploads again", describe(imgs))
	}
	if imgs[0].Resent == 0 {
		t.Errorf("resent = 0; want the uploads sent again")
	}
	h.checkArchive(1)
}

// The same, when the agent stopped with the PATCH recorded as about to be
// sent: nothing shows it arrived, and its uploads are gone; the deadline
// finds them gone and sends them again, to the same item.
func TestExpiredUploadsBeforeAttachAreSentAgain(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	g := h.group(KindSingle, "a/ct.mha", h.write("a/ct.mha", gcapitest.SampleMHA(1, 8, 8, 4)))
	ctx, cancel := context.WithCancel(context.Background())
	c := &crasher{n: 1, cancel: cancel}
	cfg := h.config()
	cfg.ImportTimeout = 200 * time.Millisecond
	// Dies right after "attaching" is committed, before the PATCH.
	p := NewPipeline(cfg, h.store, patchCrashAPI{API: h.api, c: c}, nil)
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	if err := p.Submit(ctx, g); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("no PATCH within 20s")
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	h.reopen()
	if imgs, _ := h.store.List(); len(imgs) != 1 || imgs[0].State != state.Attaching {
		t.Fatalf("got %s; want the record attaching", describe(imgs))
	}
	h.srv.ExpireUploads()
	imgs, ok := h.runFor(cfg, 20*time.Second)
	if !ok || imgs[0].State != state.Finished || imgs[0].Resent == 0 {
		t.Fatalf("got %s; want finished after sending the uploads again", describe(imgs))
	}
	h.checkArchive(1)
}

// patchCrashAPI dies (crasher c) instead of sending a PATCH.
type patchCrashAPI struct {
	API
	c *crasher
}

func (a patchCrashAPI) UpdateArchiveItem(ctx context.Context, pk string, v []gcapi.ValueUpdate) (*gcapi.ArchiveItem, error) {
	if err := a.c.tick(); err != nil {
		return nil, err
	}
	return a.API.UpdateArchiveItem(ctx, pk, v)
}

// The upload quota is a visible block ("blocked: quota") while waiting can
// heal it, and a permanent failure naming the sizes once it outlasts
// QuotaTimeout: a group larger than the quota can never finish.
func TestQuotaBlocksThenFailsWithSizes(t *testing.T) {
	hdr, raw := gcapitest.SampleMHDPair(2, 8, 8, 2, "pair.raw")
	h := newHarness(t, gcapitest.Options{QuotaBytes: int64(len(hdr))}, "keep")
	g := h.group(KindMHD, "b/pair.mhd", h.write("b/pair.mhd", hdr), h.write("b/pair.raw", raw))
	cfg := h.config()
	cfg.QuotaTimeout = time.Hour
	p := h.pipeline(cfg)
	stop := start(p)
	if err := p.Submit(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	h.waitImage("blocked by the quota, with a deadline", func(img state.Image) bool {
		return img.State == state.Retrying && strings.HasPrefix(img.WaitingFor, "blocked: quota") && !img.Until.IsZero()
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	cfg.QuotaTimeout = time.Millisecond
	imgs, ok := h.runFor(cfg, 20*time.Second)
	if !ok || imgs[0].State != state.Failed {
		t.Fatalf("got %s; want failed", describe(imgs))
	}
	size := fmt.Sprintf("%d bytes", len(hdr)+len(raw))
	if !strings.Contains(imgs[0].LastError, size) || !strings.Contains(imgs[0].LastError, "upload limit") {
		t.Errorf("last error %q; want the upload limit and the size %s named", imgs[0].LastError, size)
	}
}

// retry works on an image that waits: an importing one looks at the
// server's truth now.
func TestRetryImportingImage(t *testing.T) {
	h := newHarness(t, gcapitest.Options{ImportDelay: time.Hour}, "keep")
	g := h.group(KindSingle, "a/ct.mha", h.write("a/ct.mha", gcapitest.SampleMHA(1, 8, 8, 4)))
	p := h.pipeline(h.config())
	stop := start(p)
	defer stop()
	if err := p.Submit(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	img := h.waitImage("importing, with a deadline ahead", func(img state.Image) bool {
		return img.State == state.Importing && img.WaitingFor != "" && img.Until.After(time.Now())
	})
	eventually(t, 10*time.Second, "gcingest retry to take the importing image", func() bool {
		err := p.Retry(context.Background(), []uint64{img.ID})
		// Refused only while a worker is on it (one look at the item).
		if err != nil && !strings.Contains(err.Error(), "being worked on") {
			t.Fatalf("retry of an importing image: %v", err)
		}
		return err == nil
	})
	h.srv.Advance(2 * time.Hour)
	h.waitImage("finished", func(img state.Image) bool { return img.State == state.Finished })
}

// After the state file is lost, images whose items already hold them are
// recognised before anything is uploaded, and the archive is listed once
// for all of them, not once per image.
func TestKnownImagesRecognisedAfterStateLost(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	var groups []Group
	for i := range 10 {
		rel := fmt.Sprintf("d%d/img.mha", i)
		groups = append(groups, h.group(KindSingle, rel, h.write(rel, gcapitest.SampleMHA(int64(i), 4, 4, 2))))
	}
	h.runAll(groups...)
	before := len(h.srv.Requests())
	// The state file is lost.
	if err := h.store.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(h.statePath); err != nil {
		t.Fatal(err)
	}
	h.open()
	imgs := h.runAll(groups...)
	for _, img := range imgs {
		if img.State != state.Duplicate {
			t.Errorf("image %s is %s (%s); want duplicate", img.Key, img.State, img.LastError)
		}
	}
	uploads, listings := 0, 0
	for _, r := range h.srv.Requests()[before:] {
		switch {
		case r.Method == "POST" && strings.HasPrefix(r.Path, "/api/v1/uploads/"):
			uploads++
		case r.Method == "GET" && r.Path == "/api/v1/archives/items/":
			listings++
		}
	}
	if uploads != 0 {
		t.Errorf("%d uploads for %d known images; want 0", uploads, len(groups))
	}
	if listings != 1 {
		t.Errorf("the archive was listed %d times; want once", listings)
	}
	h.checkArchive(len(groups))
}

// S3's 400 RequestTimeout and ExpiredToken on a part PUT are healed by
// sending the part again (with fresh presigned URLs): the image lands.
func TestS3PartTimeoutsAreTransient(t *testing.T) {
	for _, f := range []gcapitest.Faults{{RateS3RequestTimeout: 0.5}, {RateS3ExpiredToken: 0.5}} {
		t.Run(fmt.Sprintf("%+v", f), func(t *testing.T) {
			h := newHarness(t, gcapitest.Options{Seed: 3}, "keep")
			h.srv.SetFaults(f)
			g := h.group(KindSingle, "a/ct.mha", h.write("a/ct.mha", gcapitest.SampleMHA(1, 64, 64, 64)))
			imgs, ok := h.runFor(h.config(), 20*time.Second, g)
			if !ok || imgs[0].State != state.Finished {
				t.Fatalf("got %s; want finished", describe(imgs))
			}
		})
	}
}

// Many images importing at once are watched through one listing of the
// archive per poll cycle, not one GET per item: unless the archive is so
// big that its listing (a request per 1000 items, and decoding every item)
// costs more than the GETs (lane.go, readItems).
func TestManyImportsReadFromOneListingPerCycle(t *testing.T) {
	// Not parallel: it counts the looks of a few poll cycles of wall time,
	// which other tests' load would make fewer.
	for _, tc := range []struct {
		name     string
		existing int // items already in the archive
		list     bool
	}{
		{"small archive", 0, true},
		{"big archive", 2 * listPage, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, gcapitest.Options{ImportDelay: time.Hour}, "keep")
			for i := range tc.existing {
				h.srv.AddItem(testArchive, fmt.Sprintf("existing %d", i))
			}
			var groups []Group
			for i := range 32 {
				rel := fmt.Sprintf("d%02d/img.mha", i)
				groups = append(groups, h.group(KindSingle, rel, h.write(rel, gcapitest.SampleMHA(int64(i), 4, 4, 2))))
			}
			p := h.pipeline(h.config())
			stop := start(p)
			if errs := p.SubmitAll(context.Background(), groups); errors.Join(errs...) != nil {
				t.Fatal(errs)
			}
			waitAll := func(st state.State) {
				t.Helper()
				h.waitRecords(30*time.Second, fmt.Sprintf("every image %s", st), func(imgs []state.Image) bool {
					n := 0
					for _, img := range imgs {
						if img.State == st {
							n++
						}
					}
					return n == len(groups)
				})
			}
			waitAll(state.Importing)
			before := len(h.srv.Requests())
			time.Sleep(20 * h.config().PollInterval) // some poll cycles, all importing
			h.srv.Advance(2 * time.Hour)             // every import finishes
			waitAll(state.Finished)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			gets, listings := 0, 0
			for _, r := range h.srv.Requests()[before:] {
				switch {
				case r.Method == "GET" && r.Path == "/api/v1/archives/items/":
					if r.Query == "" || strings.Contains(r.Query, "offset=0") || !strings.Contains(r.Query, "offset=") {
						listings++ // a listing's first page
					}
				case r.Method == "GET" && strings.HasPrefix(r.Path, "/api/v1/archives/items/"):
					gets++
				}
			}
			if tc.list && (listings == 0 || gets > 2*len(groups)) {
				t.Errorf("%d item GETs and %d archive listings for %d images; want listings and at most %d GETs",
					gets, listings, len(groups), 2*len(groups))
			}
			if !tc.list && (listings > 1 || gets < 2*len(groups)) {
				t.Errorf("%d item GETs and %d archive listings for %d images in an archive of %d items; want GETs and at most one listing",
					gets, listings, len(groups), tc.existing)
			}
			withImage := 0
			for _, it := range h.srv.Items(testArchive) {
				if v := it.Value(testIface); v != nil && v.Image != nil {
					withImage++
				}
			}
			if withImage != len(groups) {
				t.Errorf("%d items with an image; want %d", withImage, len(groups))
			}
		})
	}
}

// A watch's archive and interface edited while an image imports apply to
// new images only: the image lands where it was recorded to go, and the
// agent does not wait for it under the new interface.
func TestTargetsFrozenPerRecord(t *testing.T) {
	h := newHarness(t, gcapitest.Options{ImportDelay: time.Hour}, "keep")
	g := h.group(KindSingle, "a/ct.mha", h.write("a/ct.mha", gcapitest.SampleMHA(1, 8, 8, 4)))
	p := h.pipeline(h.config())
	stop := start(p)
	if err := p.Submit(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	h.waitImage("importing", func(img state.Image) bool { return img.State == state.Importing })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	h.srv.AddArchive("other", "Other")
	h.srv.AddInterface("mr-image", "Image")
	h.watch.Archive, h.watch.Interface = "other", "mr-image"
	h.srv.Advance(2 * time.Hour)
	imgs, ok := h.runFor(h.config(), 20*time.Second)
	if !ok || imgs[0].State != state.Finished || imgs[0].ImagePK == "" {
		t.Fatalf("got %s; want finished with its image", describe(imgs))
	}
	if got := imgs[0].Archive; got != testArchive {
		t.Errorf("record's archive = %q; want %q", got, testArchive)
	}
	h.checkArchive(1)
	if n := len(h.srv.Items("other")); n != 0 {
		t.Errorf("the new archive has %d items; want 0", n)
	}
}

// After the watch's group changes, files kept in the drop folder whose
// content an item we landed already holds are not sent again as new items.
func TestGroupChangeDoesNotResendKeptFiles(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	hdr, raw := gcapitest.SampleMHDPair(2, 8, 8, 2, "pair.raw")
	mhd, rawF := h.write("b/pair.mhd", hdr), h.write("b/pair.raw", raw)
	h.runAll(h.group(KindMHD, "b/pair.mhd", mhd, rawF))
	before := len(h.srv.Requests())
	// group = "file": every file is its own image now.
	imgs := h.runAll(h.group(KindSingle, "b/pair.mhd", mhd), h.group(KindSingle, "b/pair.raw", rawF))
	for _, img := range imgs[1:] {
		if img.State != state.Duplicate {
			t.Errorf("image %s is %s (%s); want duplicate", img.Key, img.State, img.LastError)
		}
	}
	for _, r := range h.srv.Requests()[before:] {
		if r.Method == "POST" {
			t.Errorf("%s %s after the group change; want nothing created", r.Method, r.Path)
		}
	}
	h.checkArchive(1)
}

// createThenDie creates the item and then never answers, as a process
// killed while the response was on its way.
type createThenDie struct{ API }

func (a createThenDie) CreateArchiveItem(ctx context.Context, ar, title string) (*gcapi.ArchiveItem, error) {
	if _, err := a.API.CreateArchiveItem(ctx, ar, title); err != nil {
		return nil, err
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// A restart with many images whose items were created without the answer
// being recorded lists the archive once for all of them. (Once they
// import, the confirmation lane may list it again, once per cycle for all
// of them: those listings come after the first PATCH.)
func TestRecoveryListsTheArchiveOnce(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	const n = 20
	var groups []Group
	for i := range n {
		rel := fmt.Sprintf("d%02d/img.mha", i)
		groups = append(groups, h.group(KindSingle, rel, h.write(rel, gcapitest.SampleMHA(int64(i), 4, 4, 2))))
	}
	cfg := h.config()
	cfg.Concurrency = n
	p := NewPipeline(cfg, h.store, createThenDie{h.api}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	for _, g := range groups {
		if err := p.Submit(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	// A bound, not a speed: under a loaded CI disk 20 creates after 20
	// recorded images took longer than 20 s once.
	eventually(t, time.Minute, fmt.Sprintf("%d items created", n), func() bool { return len(h.srv.Items(testArchive)) >= n })
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	h.reopen()
	before := len(h.srv.Requests())
	imgs, ok := h.runFor(h.config(), 20*time.Second)
	if !ok {
		t.Fatalf("not settled: %s", describe(imgs))
	}
	listings := 0
	for _, r := range h.srv.Requests()[before:] {
		if r.Method == "PATCH" {
			break
		}
		if r.Method == "GET" && r.Path == "/api/v1/archives/items/" {
			listings++
		}
	}
	if listings != 1 {
		t.Errorf("the archive was listed %d times for %d recovered images; want once", listings, n)
	}
	h.checkArchive(n)
}

// An import the server reports running for ever ends after
// maxImportWaits deadlines, with the reason.
func TestStuckImportFailsInTheEnd(t *testing.T) {
	h := newHarness(t, gcapitest.Options{ImportDelay: time.Hour}, "keep")
	g := h.group(KindSingle, "a/ct.mha", h.write("a/ct.mha", gcapitest.SampleMHA(1, 8, 8, 4)))
	cfg := h.config()
	cfg.ImportTimeout = 20 * time.Millisecond
	imgs, ok := h.runFor(cfg, 20*time.Second, g)
	if !ok || imgs[0].State != state.Failed || !strings.Contains(imgs[0].LastError, "has not finished") {
		t.Fatalf("got %s; want failed, the import named", describe(imgs))
	}
}

// failingUploads fails every upload with err.
type failingUploads struct {
	API
	err error
}

func (a failingUploads) UploadFile(ctx context.Context, f gcapi.FileUpload) (*gcapi.Upload, error) {
	return nil, a.err
}

// An error of no kind that waiting heals fails its image after
// UnknownErrorAttempts, with the error and what to do; a network error,
// which waiting does heal, is retried past that.
func TestUnknownErrorsEndInFailure(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		fail bool
	}{
		{"unknown", errors.New("strange failure"), true},
		{"network", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, false},
		{"disk full", &os.PathError{Op: "write", Path: "/spool/x", Err: syscall.ENOSPC}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, gcapitest.Options{}, "keep")
			cfg := h.config()
			cfg.UnknownErrorAttempts = 3
			p := NewPipeline(cfg, h.store, failingUploads{API: h.api, err: tc.err}, nil)
			stop := start(p)
			defer stop()
			if err := p.Submit(context.Background(), h.group(KindSingle, "a.mha", h.write("a.mha", gcapitest.SampleMHA(1, 4, 4, 2)))); err != nil {
				t.Fatal(err)
			}
			var img state.Image
			eventually(t, 20*time.Second, "the image failed, or retried 6 times", func() bool {
				var err error
				if img, err = h.store.Get(1); err != nil {
					t.Fatal(err)
				}
				return img.State == state.Failed || (!tc.fail && img.Attempts >= 6)
			})
			switch {
			case tc.fail && img.State == state.Failed:
				if !strings.Contains(img.LastError, "gave up after 3 attempts") || !strings.Contains(img.LastError, tc.err.Error()) ||
					!strings.Contains(img.LastError, "gcingest retry 1") {
					t.Errorf("error = %q; want the attempts, the error and what to do", img.LastError)
				}
			case !tc.fail && img.Attempts >= 6:
				if img.State != state.Retrying {
					t.Errorf("after %d attempts the image is %s (%s); want still retrying", img.Attempts, img.State, img.LastError)
				}
			default:
				t.Fatalf("image is %s after %d attempts (%s)", img.State, img.Attempts, img.LastError)
			}
		})
	}
}

// countingLooks counts the requests an importing image makes.
type countingLooks struct {
	API
	items, sessions atomic.Int64
}

func (a *countingLooks) ArchiveItem(ctx context.Context, pk string) (*gcapi.ArchiveItem, error) {
	a.items.Add(1)
	return a.API.ArchiveItem(ctx, pk)
}

func (a *countingLooks) UploadSession(ctx context.Context, pk string) (*gcapi.UploadSession, error) {
	a.sessions.Add(1)
	return a.API.UploadSession(ctx, pk)
}

func (a *countingLooks) UploadSessions(ctx context.Context) ([]gcapi.UploadSession, error) {
	a.sessions.Add(1)
	return a.API.UploadSessions(ctx)
}

// However long an import runs, its image's item is looked at every
// PollInterval (never a growing backoff), so the image is seen done within
// one cycle of the import finishing; its upload sessions are read only
// once the import is slow (sessionCycles) and every tenth look after, not
// every cycle.
func TestImportPolledOnAFixedShortCycle(t *testing.T) {
	h := newHarness(t, gcapitest.Options{ImportDelay: time.Hour}, "keep")
	g := h.group(KindSingle, "a.mha", h.write("a.mha", gcapitest.SampleMHA(1, 4, 4, 2)))
	p := h.pipeline(h.config())
	stop := start(p)
	if err := p.Submit(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the image to reach importing", func() bool {
		img, err := h.store.Get(1)
		return err == nil && img.State == state.Importing
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	cfg := h.config()
	cfg.PollMax = time.Hour
	now := time.Now()
	cfg.Now = func() time.Time { return now }
	api := &countingLooks{API: h.api}
	p = NewPipeline(cfg, h.store, api, nil)
	img, err := h.store.Get(1)
	if err != nil {
		t.Fatal(err)
	}
	const looks = 40
	for i := range looks {
		err := p.confirm.stepPoll(context.Background(), &img)
		var we *waitError
		if !errors.As(err, &we) {
			t.Fatalf("look %d: %v; want a wait", i, err)
		}
		if got := we.at.Sub(now); got != cfg.PollInterval {
			t.Fatalf("look %d waits %v before the next; want the cycle, %v", i, got, cfg.PollInterval)
		}
		now = now.Add(cfg.PollInterval)
	}
	if n := api.items.Load(); n != looks {
		t.Errorf("%d item requests in %d looks; want one each", n, looks)
	}
	if n := api.sessions.Load(); n > 2*(3+looks/10) {
		t.Errorf("%d session requests in %d looks; want them from look %d on, every %d", n, looks, sessionCycles, sessionEvery)
	}
}

// hangUpload never finishes the upload of a file of that name: it waits
// for the end of its context, like a request hung until its timeout.
type hangUpload struct {
	API
	name string
}

func (a hangUpload) UploadFile(ctx context.Context, f gcapi.FileUpload) (*gcapi.Upload, error) {
	if f.Filename == a.name {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return a.API.UploadFile(ctx, f)
}

// An image found unfinished at start goes first, but a slow step of it (a
// long upload, a request hung until its timeout) does not hold the new
// images: they land while it is still under way. (Once, 19 new images
// waited behind one recovered image's hung item create.)
func TestRecoveredImageDoesNotHoldNewWork(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	old := h.pipeline(h.config())
	if err := old.Submit(context.Background(), h.group(KindSingle, "old.mha", h.write("old.mha", gcapitest.SampleMHA(1, 4, 4, 2)))); err != nil {
		t.Fatal(err)
	}
	h.reopen()
	p := NewPipeline(h.config(), h.store, hangUpload{API: h.api, name: "old.mha"}, nil)
	stop := start(p)
	defer stop()
	for i := range 3 {
		rel := fmt.Sprintf("new%d.mha", i)
		if err := p.Submit(context.Background(), h.group(KindSingle, rel, h.write(rel, gcapitest.SampleMHA(int64(10+i), 4, 4, 2)))); err != nil {
			t.Fatal(err)
		}
	}
	h.waitRecords(30*time.Second, "the three new images to land while the old one's upload hangs", func(imgs []state.Image) bool {
		n := 0
		for _, img := range imgs {
			if img.Key != "old.mha" && img.State == state.Finished {
				n++
			}
		}
		return n == 3
	})
	if imgs, _ := h.store.List(); imgs[0].Key != "old.mha" || imgs[0].State.Terminal() {
		t.Errorf("the old image is %s %s; want it still under way", imgs[0].Key, imgs[0].State)
	}
}
