package gcapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

// The contract suite checks gcapi.Client against the fake server on every
// run and, when GCINGEST_TEST_URL and GCINGEST_TEST_TOKEN are set, against
// a real Grand Challenge. The real run needs an archive the token may
// upload to and its sockets, named by GCINGEST_TEST_ARCHIVE (slug) and
// GCINGEST_TEST_IMAGE_INTERFACE, GCINGEST_TEST_IMAGE_INTERFACE_2 (image
// kinds), GCINGEST_TEST_FILE_INTERFACE (a PDF file socket) and
// GCINGEST_TEST_VALUE_INTERFACE (a Float socket). It creates archive
// items that cannot be deleted through the API.

// target is a server the contract runs against.
type target struct {
	url, token string
	fake       *gcapitest.Server // nil for a real server
	archive    string
	image      string // image socket slug
	image2     string // a second image socket
	file       string // PDF file socket
	value      string // Float socket
	deadline   time.Duration
}

func fakeTarget(t *testing.T) *target {
	t.Helper()
	s := gcapitest.NewServer(gcapitest.Options{Seed: 1})
	t.Cleanup(s.Close)
	tg := &target{url: s.URL, token: s.Token(), fake: s, archive: "contract-archive",
		image: "ct-image", image2: "ct-image-copy", file: "report", value: "lung-volume", deadline: 30 * time.Second}
	s.AddArchive(tg.archive, "Contract archive")
	s.AddInterface(tg.image, "Image")
	s.AddInterface(tg.image2, "Image")
	s.AddInterface(tg.file, "PDF file")
	s.AddInterface(tg.value, "Float")
	return tg
}

func realTarget(t *testing.T) *target {
	t.Helper()
	u, tok := os.Getenv("GCINGEST_TEST_URL"), os.Getenv("GCINGEST_TEST_TOKEN")
	if u == "" || tok == "" {
		t.Skip("no real server: set GCINGEST_TEST_URL and GCINGEST_TEST_TOKEN (and GCINGEST_TEST_ARCHIVE, " +
			"GCINGEST_TEST_*_INTERFACE) to run the contract against a real Grand Challenge")
	}
	env := func(k, def string) string {
		if v := os.Getenv(k); v != "" {
			return v
		}
		return def
	}
	return &target{url: u, token: tok,
		archive:  env("GCINGEST_TEST_ARCHIVE", ""),
		image:    env("GCINGEST_TEST_IMAGE_INTERFACE", "generic-medical-image"),
		image2:   env("GCINGEST_TEST_IMAGE_INTERFACE_2", "generic-overlay"),
		file:     env("GCINGEST_TEST_FILE_INTERFACE", ""),
		value:    env("GCINGEST_TEST_VALUE_INTERFACE", ""),
		deadline: 10 * time.Minute,
	}
}

func (tg *target) client(t *testing.T, opts ...gcapi.Option) *gcapi.Client {
	t.Helper()
	opts = append([]gcapi.Option{gcapi.WithRetry(gcapi.RetryPolicy{BaseDelay: 5 * time.Millisecond, MaxDelay: 50 * time.Millisecond})}, opts...)
	c, err := gcapi.New(tg.url, tg.token, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (tg *target) needFake(t *testing.T) {
	t.Helper()
	if tg.fake == nil {
		t.Skip("needs the fake server's fault knobs or request log")
	}
}

func (tg *target) need(t *testing.T, what, v string) {
	t.Helper()
	if v == "" {
		t.Skipf("no %s configured for the real server", what)
	}
}

func TestContract(t *testing.T) {
	t.Run("fake", func(t *testing.T) { runContract(t, fakeTarget(t)) })
	t.Run("real", func(t *testing.T) { runContract(t, realTarget(t)) })
}

func runContract(t *testing.T, tg *target) {
	t.Run("archive by slug", func(t *testing.T) { contractArchive(t, tg) })
	t.Run("interface by slug", func(t *testing.T) { contractInterface(t, tg) })
	t.Run("title conflict resolves to the existing item", func(t *testing.T) { contractTitleConflict(t, tg) })
	t.Run("patch each value kind", func(t *testing.T) { contractValues(t, tg) })
	t.Run("resume after the client is discarded", func(t *testing.T) { contractResume(t, tg) })
	t.Run("empty file", func(t *testing.T) {
		u := uploadBytes(t, tg.client(t), "empty.mha", nil)
		if tg.fake != nil {
			got, err := tg.fake.UploadContent(u.PK)
			if err != nil || len(got) != 0 {
				t.Errorf("content = %d bytes, %v; want none", len(got), err)
			}
		}
	})
	t.Run("expired presigned URLs", func(t *testing.T) { contractExpiredURLs(t, tg) })
	t.Run("lost complete answer", func(t *testing.T) { contractLostComplete(t, tg) })
	t.Run("permanent failure aborts the upload", func(t *testing.T) { contractPermanentAborts(t, tg) })
	t.Run("quota keeps the upload to resume", func(t *testing.T) { contractQuotaKeeps(t, tg) })
	t.Run("retry classes", func(t *testing.T) { contractRetryClasses(t, tg) })
	t.Run("download without leaking the token", func(t *testing.T) { contractDownload(t, tg) })
	if tg.fake != nil {
		// Checked last, over every request of the whole suite.
		t.Run("no token to presigned or redirect URLs", func(t *testing.T) {
			for _, r := range tg.fake.Requests() {
				if (strings.HasPrefix(r.Path, "/s3/") || strings.HasPrefix(r.Path, "/s3media/")) && r.Authorization != "" {
					t.Errorf("%s %s carried Authorization", r.Method, r.Path)
				}
			}
			if n := tg.fake.Stats().TokenLeaks; n != 0 {
				t.Errorf("fake counted %d token leaks", n)
			}
		})
	}
}

func contractArchive(t *testing.T, tg *target) {
	tg.need(t, "archive", tg.archive)
	c := tg.client(t)
	ctx := context.Background()
	a, err := c.ArchiveBySlug(ctx, tg.archive)
	if err != nil {
		t.Fatal(err)
	}
	if a.PK == "" || !strings.HasPrefix(a.APIURL, c.BaseURL()+"archives/") {
		t.Errorf("archive = %+v, want a pk and an api_url under %sarchives/", a, c.BaseURL())
	}
	_, err = c.ArchiveBySlug(ctx, "no-such-archive-for-gcingest")
	if !gcapi.IsNotFound(err) {
		t.Errorf("unknown slug: err = %v, want not found", err)
	}
	if tg.fake != nil {
		bad, _ := gcapi.New(tg.url, "wrong-token")
		if _, err := bad.ArchiveBySlug(ctx, tg.archive); err == nil {
			t.Error("a wrong token found the archive")
		}
	}
}

func contractInterface(t *testing.T, tg *target) {
	c := tg.client(t)
	ctx := context.Background()
	f, err := c.InterfaceBySlug(ctx, tg.image)
	if err != nil {
		t.Fatal(err)
	}
	if f.Slug != tg.image || f.SuperKind != gcapi.SuperKindImage || f.Kind == "" {
		t.Errorf("interface = %+v, want slug %s with super_kind Image", f, tg.image)
	}
	if _, err := c.InterfaceBySlug(ctx, "no-such-socket-for-gcingest"); !gcapi.IsNotFound(err) {
		t.Errorf("unknown slug: err = %v, want not found", err)
	}
}

func uniqueTitle(t *testing.T) string {
	return fmt.Sprintf("gcingest contract %s %d", t.Name(), time.Now().UnixNano())
}

func contractTitleConflict(t *testing.T, tg *target) {
	tg.need(t, "archive", tg.archive)
	c := tg.client(t)
	ctx := context.Background()
	a, err := c.ArchiveBySlug(ctx, tg.archive)
	if err != nil {
		t.Fatal(err)
	}
	title := uniqueTitle(t)
	first, err := c.CreateArchiveItem(ctx, a.APIURL, title)
	if err != nil {
		t.Fatal(err)
	}
	if first.Title != title || first.PK == "" {
		t.Errorf("created %+v, want title %q", first, title)
	}
	_, err = c.CreateArchiveItem(ctx, a.APIURL, title)
	if !gcapi.IsTitleConflict(err) {
		t.Fatalf("second create: err = %v, want a title conflict", err)
	}
	found, err := c.ArchiveItemByTitle(ctx, a.PK, title)
	if err != nil {
		t.Fatal(err)
	}
	if found == nil || found.PK != first.PK {
		t.Fatalf("ArchiveItemByTitle = %+v, want item %s", found, first.PK)
	}
	if tg.fake != nil {
		if n := countTitle(tg.fake.Items(tg.archive), title); n != 1 {
			t.Errorf("%d items titled %q on the server, want 1", n, title)
		}
	}
}

func countTitle(items []gcapitest.ArchiveItem, title string) int {
	n := 0
	for _, it := range items {
		if it.Title == title {
			n++
		}
	}
	return n
}

// uploadBytes sends data as one upload.
func uploadBytes(t *testing.T, c *gcapi.Client, name string, data []byte) *gcapi.Upload {
	t.Helper()
	u, err := c.UploadFile(context.Background(), gcapi.FileUpload{Filename: name, Body: bytes.NewReader(data), Size: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	if u.Status != gcapi.UploadCompleted {
		t.Fatalf("upload status %q, want Completed", u.Status)
	}
	return u
}

// waitValue polls the item until ok accepts the value for slug.
func waitValue(t *testing.T, tg *target, c *gcapi.Client, pk, slug string, ok func(*gcapi.ItemValue) bool) *gcapi.ItemValue {
	t.Helper()
	deadline := time.Now().Add(tg.deadline)
	wait := 10 * time.Millisecond
	for {
		it, err := c.ArchiveItem(context.Background(), pk)
		if err != nil {
			t.Fatal(err)
		}
		if v := it.Value(slug); v != nil && ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("item %s: no accepted value for %s after %s; values %+v", pk, slug, tg.deadline, it.Values)
		}
		time.Sleep(wait) // a poll interval, not a wait for an event we could observe
		wait = min(2*wait, 5*time.Second)
	}
}

func contractValues(t *testing.T, tg *target) {
	tg.need(t, "archive", tg.archive)
	c := tg.client(t)
	ctx := context.Background()
	a, err := c.ArchiveBySlug(ctx, tg.archive)
	if err != nil {
		t.Fatal(err)
	}
	item, err := c.CreateArchiveItem(ctx, a.APIURL, uniqueTitle(t))
	if err != nil {
		t.Fatal(err)
	}

	var imageURL string
	t.Run("user_uploads image", func(t *testing.T) {
		u := uploadBytes(t, c, "ct.mha", gcapitest.SampleMHA(7, 8, 8, 4))
		got, err := c.UpdateArchiveItem(ctx, item.PK, []gcapi.ValueUpdate{{Interface: tg.image, UserUploads: []string{u.APIURL}}})
		if err != nil {
			t.Fatal(err)
		}
		if got.PK != item.PK {
			t.Errorf("PATCH answered item %s, want %s", got.PK, item.PK)
		}
		v := waitValue(t, tg, c, item.PK, tg.image, func(v *gcapi.ItemValue) bool { return v.Image != nil })
		imageURL = *v.Image
		if _, err := c.Image(ctx, imageURL); err != nil {
			t.Errorf("the imported image: %v", err)
		}
		if _, err := c.Upload(ctx, u.PK); !gcapi.IsNotFound(err) {
			t.Errorf("the consumed upload: err = %v, want not found", err)
		}
	})
	t.Run("user_upload file", func(t *testing.T) {
		tg.need(t, "file interface", tg.file)
		u := uploadBytes(t, c, "report.pdf", []byte("%PDF-1.4\n% gcingest contract\n"))
		if _, err := c.UpdateArchiveItem(ctx, item.PK, []gcapi.ValueUpdate{{Interface: tg.file, UserUpload: u.APIURL}}); err != nil {
			t.Fatal(err)
		}
		waitValue(t, tg, c, item.PK, tg.file, func(v *gcapi.ItemValue) bool { return v.File != nil })
	})
	t.Run("image", func(t *testing.T) {
		if imageURL == "" {
			t.Skip("no image from the user_uploads step")
		}
		if _, err := c.UpdateArchiveItem(ctx, item.PK, []gcapi.ValueUpdate{{Interface: tg.image2, Image: imageURL}}); err != nil {
			t.Fatal(err)
		}
		waitValue(t, tg, c, item.PK, tg.image2, func(v *gcapi.ItemValue) bool { return v.Image != nil && *v.Image == imageURL })
	})
	t.Run("value", func(t *testing.T) {
		tg.need(t, "value interface", tg.value)
		got, err := c.UpdateArchiveItem(ctx, item.PK, []gcapi.ValueUpdate{{Interface: tg.value, Value: json.RawMessage(`1.9`)}})
		if err != nil {
			t.Fatal(err)
		}
		if v := got.Value(tg.value); v == nil || string(v.Value) != "1.9" {
			t.Errorf("PATCH answer value = %+v, want 1.9", v)
		}
		waitValue(t, tg, c, item.PK, tg.value, func(v *gcapi.ItemValue) bool { return string(v.Value) == "1.9" })
		// A value that does not fit the socket is the server's 400, word for word.
		_, err = c.UpdateArchiveItem(ctx, item.PK, []gcapi.ValueUpdate{{Interface: tg.value, Value: json.RawMessage(`"not a number"`)}})
		var e *gcapi.Error
		if !errors.As(err, &e) || e.StatusCode != 400 || e.Message == "" || !gcapi.IsPermanent(err) {
			t.Errorf("bad value: err = %v, want a permanent 400 with the server's message", err)
		}
	})
}

// partPUTs counts the part PUTs each part number of an upload got.
func partPUTs(s *gcapitest.Server, uploadPK string) map[int]int {
	n := map[int]int{}
	for _, r := range s.Requests() {
		if r.Method != http.MethodPut || !strings.HasPrefix(r.Path, "/s3/") || !strings.HasSuffix(r.Path, "/"+uploadPK) {
			continue
		}
		q, _ := url.ParseQuery(r.Query)
		p, _ := strconv.Atoi(q.Get("partNumber"))
		n[p]++
	}
	return n
}

// seqBytes is size pseudo-random bytes.
func seqBytes(seed, size int) []byte {
	b := make([]byte, size)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func contractResume(t *testing.T, tg *target) {
	const partSize = gcapi.MinPartSize
	data := seqBytes(3, 5*partSize-1000) // 5 parts, the last short
	ctx := context.Background()

	// First process: sends two parts, records them, and dies (its context
	// is cancelled, as on shutdown).
	var created *gcapi.Upload
	var done []gcapi.Part
	var mu sync.Mutex
	ctx1, kill := context.WithCancel(ctx)
	c1 := tg.client(t)
	_, err := c1.UploadFile(ctx1, gcapi.FileUpload{
		Filename: "resume.mha", Body: bytes.NewReader(data), Size: int64(len(data)),
		PartSize: partSize, PartConcurrency: 1,
		OnCreated: func(u *gcapi.Upload) error { created = u; return nil },
		OnPart: func(p gcapi.Part) error {
			mu.Lock()
			defer mu.Unlock()
			done = append(done, p)
			if len(done) == 2 {
				kill()
			}
			return nil
		},
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("first upload: err = %v, want context.Canceled", err)
	}
	if created == nil || len(done) != 2 {
		t.Fatalf("first upload: created %v, %d parts recorded; want an upload and 2 parts", created, len(done))
	}
	c1 = nil // discarded: nothing of it is used again

	// Second process: a new client resumes from what was recorded.
	c2 := tg.client(t)
	mid, err := c2.Upload(ctx, created.PK)
	if err != nil {
		t.Fatal(err)
	}
	if mid.Status != gcapi.UploadInitialized {
		t.Fatalf("upload after the first process died is %s, want Initialized (not aborted)", mid.Status)
	}
	var sent []int
	var progress int64
	u, err := c2.UploadFile(ctx, gcapi.FileUpload{
		Filename: "resume.mha", Body: bytes.NewReader(data), Size: int64(len(data)),
		PartSize: partSize, PartConcurrency: 2,
		Resume: &gcapi.Upload{PK: created.PK, S3UploadID: created.S3UploadID}, Done: done,
		OnCreated: func(u *gcapi.Upload) error { t.Errorf("a new upload %s was created", u.PK); return nil },
		OnPart:    func(p gcapi.Part) error { sent = append(sent, p.PartNumber); return nil },
		Progress:  func(n int64) { progress += n },
	})
	if err != nil {
		t.Fatal(err)
	}
	if u.PK != created.PK || u.Status != gcapi.UploadCompleted {
		t.Errorf("resumed upload = %s %s, want %s Completed", u.PK, u.Status, created.PK)
	}
	if len(sent) != 3 {
		t.Errorf("resume sent parts %v, want the 3 missing ones", sent)
	}
	if progress != int64(len(data)) {
		t.Errorf("progress adds up to %d, want %d", progress, len(data))
	}
	if tg.fake == nil {
		return
	}
	puts := partPUTs(tg.fake, created.PK)
	for _, p := range done {
		if puts[p.PartNumber] != 1 {
			t.Errorf("part %d held by the server was PUT %d times, want once", p.PartNumber, puts[p.PartNumber])
		}
	}
	for n := 1; n <= 5; n++ {
		if puts[n] == 0 {
			t.Errorf("part %d never PUT", n)
		}
	}
	got, err := tg.fake.UploadContent(created.PK)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("the server holds %d bytes that differ from the %d sent", len(got), len(data))
	}

	// Resuming a Completed upload returns it without sending anything.
	before := tg.fake.Stats().PartPUTs
	again, err := c2.UploadFile(ctx, gcapi.FileUpload{Filename: "resume.mha", Body: bytes.NewReader(data),
		Size: int64(len(data)), PartSize: partSize, Resume: u})
	if err != nil || again.PK != u.PK {
		t.Errorf("resume of a Completed upload = %v, %v; want it back", again, err)
	}
	if tg.fake.Stats().PartPUTs != before {
		t.Error("resume of a Completed upload sent parts")
	}
}

func contractExpiredURLs(t *testing.T, tg *target) {
	tg.needFake(t)
	c := tg.client(t)
	data := seqBytes(4, 3*gcapi.MinPartSize)
	var once sync.Once
	u, err := c.UploadFile(context.Background(), gcapi.FileUpload{
		Filename: "expire.mha", Body: bytes.NewReader(data), Size: int64(len(data)),
		PartSize: gcapi.MinPartSize, PartConcurrency: 1,
		// After the first part, the URLs fetched with it expire.
		OnPart: func(gcapi.Part) error { once.Do(func() { tg.fake.Advance(2 * time.Hour) }); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := tg.fake.UploadContent(u.PK)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("upload content: %d bytes, %v; want the %d sent", len(got), err, len(data))
	}
	forbidden := 0
	for _, r := range tg.fake.Requests() {
		if strings.HasSuffix(r.Path, "/"+u.PK) && r.Status == http.StatusForbidden {
			forbidden++
		}
	}
	if forbidden == 0 {
		t.Error("no PUT met an expired URL; the test did not test expiry")
	}
}

func contractLostComplete(t *testing.T, tg *target) {
	tg.needFake(t)
	c := tg.client(t)
	data := seqBytes(5, 1000)
	u, err := c.UploadFile(context.Background(), gcapi.FileUpload{
		Filename: "lost.mha", Body: bytes.NewReader(data), Size: int64(len(data)),
		OnCreated: func(u *gcapi.Upload) error {
			// The complete takes effect, but its answer is a 500.
			tg.fake.SetFaults(gcapitest.Faults{Rate500: 1, PathPrefix: "/api/v1/uploads/" + u.PK + "/" + u.S3UploadID + "/complete"})
			return nil
		},
	})
	tg.fake.SetFaults(gcapitest.Faults{})
	if err != nil {
		t.Fatal(err)
	}
	if u.Status != gcapi.UploadCompleted {
		t.Errorf("status %q, want Completed", u.Status)
	}
	completes := 0
	for _, r := range tg.fake.Requests() {
		if strings.HasSuffix(r.Path, "/complete-multipart-upload/") && strings.Contains(r.Path, u.PK) {
			completes++
		}
	}
	if completes != 1 {
		t.Errorf("%d completes sent, want 1 (the upload was checked instead of completing again)", completes)
	}
}

// contractRetryClasses makes the first attempt of one request fail with
// each fault and checks what the client does: retried and fine, or
// returned because the request may have taken effect.
func contractRetryClasses(t *testing.T, tg *target) {
	tg.needFake(t)
	ctx := context.Background()
	a, err := tg.client(t).ArchiveBySlug(ctx, tg.archive)
	if err != nil {
		t.Fatal(err)
	}
	item := tg.fake.AddItem(tg.archive, uniqueTitle(t))
	itemPath := "/api/v1/archives/items/" + item.PK + "/"

	type result struct {
		retries int
		err     error
	}
	// run sets the fault for prefix, runs op with a client whose retries
	// switch the fault off, and reports.
	run := func(t *testing.T, f gcapitest.Faults, op func(*gcapi.Client) error) result {
		t.Helper()
		var retries atomic.Int32
		c := tg.client(t, gcapi.WithStallTimeout(200*time.Millisecond), gcapi.WithRetry(gcapi.RetryPolicy{
			BaseDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond,
			OnRetry: func(context.Context, string, string, int, time.Duration, error) {
				retries.Add(1)
				tg.fake.SetFaults(gcapitest.Faults{})
			},
		}))
		tg.fake.SetFaults(f)
		err := op(c)
		tg.fake.SetFaults(gcapitest.Faults{})
		return result{int(retries.Load()), err}
	}
	get := func(c *gcapi.Client) error { _, err := c.ArchiveItem(ctx, item.PK); return err }

	for _, tc := range []struct {
		name  string
		fault gcapitest.Faults
	}{
		{"5xx", gcapitest.Faults{Rate5xx: 1}},
		{"429 with Retry-After", gcapitest.Faults{Rate429: 1, RetryAfter: time.Second}},
		{"reset", gcapitest.Faults{RateReset: 1}},
		{"500", gcapitest.Faults{Rate500: 1}},
		{"stall", gcapitest.Faults{RateStall: 1, Stall: 10 * time.Second}},
	} {
		t.Run("GET "+tc.name+" is retried", func(t *testing.T) {
			tc.fault.PathPrefix = itemPath
			r := run(t, tc.fault, get)
			if r.err != nil {
				t.Fatalf("GET: %v", r.err)
			}
			// The transport itself may repeat a GET whose reused
			// connection broke; either way the fault was met and survived.
			if r.retries != 1 && tc.name != "reset" {
				t.Errorf("%d retries, want 1", r.retries)
			}
		})
	}

	create := func(title string) func(*gcapi.Client) error {
		return func(c *gcapi.Client) error { _, err := c.CreateArchiveItem(ctx, a.APIURL, title); return err }
	}
	for _, tc := range []struct {
		name    string
		fault   gcapitest.Faults
		retried bool // else: returned, and the caller finds the item by title
	}{
		{"5xx", gcapitest.Faults{Rate5xx: 1}, true},
		{"429", gcapitest.Faults{Rate429: 1, RetryAfter: time.Second}, true},
		{"reset", gcapitest.Faults{RateReset: 1}, false},
		{"500", gcapitest.Faults{Rate500: 1}, false},
	} {
		t.Run("POST item "+tc.name, func(t *testing.T) {
			tc.fault.PathPrefix = "/api/v1/archives/items/"
			title := uniqueTitle(t)
			r := run(t, tc.fault, create(title))
			if tc.name == "5xx" && errors.Is(r.err, gcapi.ErrAmbiguous) {
				// A 502, 503 or 504 may come after the server acted:
				// returned like a 500, never repeated blindly.
				tc.retried = false
			}
			if tc.retried {
				if r.err != nil || r.retries != 1 {
					t.Fatalf("create: %d retries, err %v; want 1 retry and success", r.retries, r.err)
				}
			} else {
				if r.err == nil || r.retries != 0 {
					t.Fatalf("create: %d retries, err %v; want the error returned without a retry", r.retries, r.err)
				}
				if gcapi.IsPermanent(r.err) {
					t.Errorf("IsPermanent(%v) = true; the create may have worked", r.err)
				}
				// The caller reconciles: it looks the title up, and creates
				// the item only when it is absent.
				found, err := tg.client(t).ArchiveItemByTitle(ctx, a.PK, title)
				if err != nil {
					t.Fatalf("ArchiveItemByTitle after an ambiguous create: %v", err)
				}
				if found == nil {
					if tc.name != "5xx" {
						t.Fatalf("no item titled %q after a %s: the server acted, the item must be there", title, tc.name)
					}
					// This gateway answered before the server acted.
					if _, err := tg.client(t).CreateArchiveItem(ctx, a.APIURL, title); err != nil {
						t.Fatalf("create after the lookup found nothing: %v", err)
					}
				}
			}
			if n := countTitle(tg.fake.Items(tg.archive), title); n != 1 {
				t.Errorf("%d items titled %q, want exactly 1", n, title)
			}
		})
	}

	t.Run("part PUTs survive faults", func(t *testing.T) {
		data := seqBytes(6, 4*gcapi.MinPartSize)
		var retries atomic.Int32
		c := tg.client(t, gcapi.WithRetry(gcapi.RetryPolicy{BaseDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond,
			OnRetry: func(context.Context, string, string, int, time.Duration, error) { retries.Add(1) }}))
		tg.fake.SetFaults(gcapitest.Faults{Rate5xx: 0.2, RateReset: 0.2, Rate500: 0.1, PathPrefix: "/s3/"})
		u, err := c.UploadFile(ctx, gcapi.FileUpload{Filename: "faulty.mha", Body: bytes.NewReader(data),
			Size: int64(len(data)), PartSize: gcapi.MinPartSize})
		tg.fake.SetFaults(gcapitest.Faults{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := tg.fake.UploadContent(u.PK)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("upload content: %d bytes, %v; want the %d sent", len(got), err, len(data))
		}
		if retries.Load() == 0 {
			t.Error("no retries: the faults were not met")
		}
	})
}

func contractDownload(t *testing.T, tg *target) {
	tg.needFake(t)
	item := tg.fake.AddItem(tg.archive, uniqueTitle(t))
	img := gcapitest.SampleMHA(9, 4, 4, 2)
	if err := tg.fake.AddImageValue(item.PK, tg.image, "dl.mha", img); err != nil {
		t.Fatal(err)
	}
	pdf := []byte("%PDF-1.4\n% download\n")
	if err := tg.fake.AddFileValue(item.PK, tg.file, "dl.pdf", pdf); err != nil {
		t.Fatal(err)
	}
	c := tg.client(t)
	ctx := context.Background()
	it, err := c.ArchiveItem(ctx, item.PK)
	if err != nil {
		t.Fatal(err)
	}
	iv := it.Value(tg.image)
	if iv == nil || iv.Image == nil {
		t.Fatalf("item values %+v lack the image", it.Values)
	}
	im, err := c.Image(ctx, *iv.Image)
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Files) == 0 {
		t.Fatalf("image %s has no files", im.PK)
	}
	var buf bytes.Buffer
	if _, err := c.Download(ctx, im.Files[0].File, &buf); err != nil {
		t.Fatal(err)
	}
	want, err := tg.fake.ImageContent(im.PK)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("downloaded %d bytes, want the %d stored", buf.Len(), len(want))
	}
	fv := it.Value(tg.file)
	if fv == nil || fv.File == nil {
		t.Fatalf("item values %+v lack the file", it.Values)
	}
	buf.Reset()
	if _, err := c.Download(ctx, *fv.File, &buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), pdf) {
		t.Errorf("downloaded file %q, want %q", buf.Bytes(), pdf)
	}
	imgs, err := c.Images(ctx, gcapi.ImageFilter{Archive: mustArchivePK(t, c, tg.archive)})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, i := range imgs {
		found = found || i.PK == im.PK
	}
	if !found {
		t.Errorf("Images(archive) lacks image %s", im.PK)
	}
}

func mustArchivePK(t *testing.T, c *gcapi.Client, slug string) string {
	t.Helper()
	a, err := c.ArchiveBySlug(context.Background(), slug)
	if err != nil {
		t.Fatal(err)
	}
	return a.PK
}

func contractPermanentAborts(t *testing.T, tg *target) {
	tg.needFake(t)
	s := gcapitest.NewServer(gcapitest.Options{})
	defer s.Close()
	c, err := gcapi.New(s.URL, s.Token(), gcapi.WithRetry(gcapi.RetryPolicy{BaseDelay: time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	// A body shorter than its Size: sending it again cannot help.
	data := seqBytes(8, 2*gcapi.MinPartSize)
	_, err = c.UploadFile(context.Background(), gcapi.FileUpload{Filename: "short.mha", Body: bytes.NewReader(data),
		Size: int64(len(data)) + 1, PartSize: gcapi.MinPartSize, PartConcurrency: 2})
	if err == nil || !gcapi.IsPermanent(err) {
		t.Fatalf("err = %v, want a permanent error", err)
	}
	ups := s.Uploads()
	if len(ups) != 1 || ups[0].Status != gcapi.UploadAborted {
		t.Errorf("uploads on the server = %+v, want one Aborted", ups)
	}
}

// contractQuotaKeeps: the byte quota refuses part URLs with 403 "Upload
// limit reached", which frees as imports take uploads; the upload is left
// Initialized with the parts it holds, and resuming it asks the server
// for it again rather than creating another.
func contractQuotaKeeps(t *testing.T, tg *target) {
	tg.needFake(t)
	// A server of its own, with a quota that the second batch of part
	// URLs exceeds (the quota is checked when URLs are asked for).
	s := gcapitest.NewServer(gcapitest.Options{QuotaBytes: 10 << 20})
	defer s.Close()
	c, err := gcapi.New(s.URL, s.Token(), gcapi.WithRetry(gcapi.RetryPolicy{BaseDelay: time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	data := seqBytes(8, 7*gcapi.MinPartSize)
	var created *gcapi.Upload
	var parts []gcapi.Part
	fu := gcapi.FileUpload{Filename: "big.mha", Body: bytes.NewReader(data),
		Size: int64(len(data)), PartSize: gcapi.MinPartSize, PartConcurrency: 2,
		OnCreated: func(u *gcapi.Upload) error { created = u; return nil },
		OnPart:    func(p gcapi.Part) error { parts = append(parts, p); return nil }}
	_, err = c.UploadFile(context.Background(), fu)
	var e *gcapi.Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusForbidden || !gcapi.IsUploadLimit(err) {
		t.Fatalf("err = %v, want the server's 403 upload limit", err)
	}
	if !strings.Contains(e.Message, "Upload limit reached") {
		t.Errorf("message %q, want the server's words", e.Message)
	}
	ups := s.Uploads()
	if len(ups) != 1 || ups[0].Status != gcapi.UploadInitialized || created == nil || ups[0].PK != created.PK {
		t.Fatalf("uploads on the server = %+v, want the created one still Initialized", ups)
	}
	if len(parts) == 0 {
		t.Fatal("no part accepted before the quota; the test needs some")
	}
	before := s.Stats()
	fu.Resume, fu.Done, fu.OnCreated = created, parts, func(u *gcapi.Upload) error {
		t.Errorf("resume created upload %s", u.PK)
		return nil
	}
	if _, err := c.UploadFile(context.Background(), fu); !gcapi.IsUploadLimit(err) {
		t.Fatalf("resumed: err = %v, want the upload limit again", err)
	}
	after := s.Stats()
	if got := after.UploadCreates - before.UploadCreates; got != 0 {
		t.Errorf("resume created %d uploads, want 0", got)
	}
	if got := after.ListParts - before.ListParts; got != 1 {
		t.Errorf("resume listed parts %d times, want 1", got)
	}
	if ups := s.Uploads(); len(ups) != 1 || ups[0].Status != gcapi.UploadInitialized {
		t.Errorf("uploads on the server after the resume = %+v, want one Initialized", ups)
	}
}
