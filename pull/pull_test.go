package pull

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testArchive = "lungs"

func newServer(t *testing.T) *gcapitest.Server {
	t.Helper()
	srv := gcapitest.NewServer(gcapitest.Options{Seed: 7})
	t.Cleanup(srv.Close)
	srv.AddArchive(testArchive, "Lungs")
	srv.AddInterface("ct", "Image")
	srv.AddInterface("report", "PDF file")
	srv.AddInterface("volume", "Float")
	return srv
}

func newClient(t *testing.T, srv *gcapitest.Server) *gcapi.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := gcapi.New(srv.URL, srv.Token(),
		gcapi.WithHTTPClient(&http.Client{Transport: tr}),
		gcapi.WithRetry(gcapi.RetryPolicy{BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// archiveFixture is what a test put on the server and expects on disk.
type archiveFixture struct {
	files  map[string][]byte          // path under DIR -> content
	values map[string]json.RawMessage // item folder -> values.json content
}

// addItem creates an item with a ct image (TIFF every fifth, MHA otherwise),
// a volume, and a PDF report on every third.
func addItem(t *testing.T, srv *gcapitest.Server, fx *archiveFixture, rng *rand.Rand, i int, title, folder string) {
	t.Helper()
	it := srv.AddItem(testArchive, title)
	if it.PK == "" {
		t.Fatalf("AddItem(%q) made no item", title)
	}
	img := randomBytes(rng, 5<<10+rng.IntN(40<<10))
	name, ext := "scan.mha", ".mha"
	if i%5 == 0 {
		name, ext = "slide.tif", ".tif"
	}
	if err := srv.AddImageValue(it.PK, "ct", name, img); err != nil {
		t.Fatal(err)
	}
	fx.files[folder+"/ct"+ext] = img
	if i%3 == 0 {
		pdf := append([]byte("%PDF-1.4\n"), randomBytes(rng, 1+rng.IntN(20<<10))...)
		if err := srv.AddFileValue(it.PK, "report", "report.pdf", pdf); err != nil {
			t.Fatal(err)
		}
		fx.files[folder+"/report.pdf"] = pdf
	}
	vol := json.RawMessage(fmt.Sprintf("%d.5", i))
	if err := srv.SetValue(it.PK, "volume", vol); err != nil {
		t.Fatal(err)
	}
	fx.values[folder] = json.RawMessage(fmt.Sprintf("{\n  \"volume\": %s\n}\n", vol))
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// buildArchive adds n items titled case00, case01, ….
func buildArchive(t *testing.T, srv *gcapitest.Server, n int) *archiveFixture {
	t.Helper()
	fx := &archiveFixture{files: map[string][]byte{}, values: map[string]json.RawMessage{}}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		title := fmt.Sprintf("case%02d", i)
		addItem(t, srv, fx, rng, i, title, title)
	}
	return fx
}

// checkTree asserts DIR holds exactly the fixture's files and values, plus
// the download records, and no .part or temp file.
func checkTree(t *testing.T, dir string, fx *archiveFixture) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		base := filepath.Base(rel)
		switch {
		case base == manifestFile:
			return nil
		case base == valuesFile:
			got, _ := os.ReadFile(p)
			if want := fx.values[filepath.Dir(rel)]; !bytes.Equal(got, want) {
				t.Errorf("%s = %q, want %q", rel, got, want)
			}
			seen[rel] = true
			return nil
		}
		want, ok := fx.files[rel]
		if !ok {
			t.Errorf("unexpected file %s", rel)
			return nil
		}
		got, _ := os.ReadFile(p)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes differ from the %d put on the server", rel, len(got), len(want))
		}
		seen[rel] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for rel := range fx.files {
		if !seen[rel] {
			t.Errorf("missing file %s", rel)
		}
	}
	for folder := range fx.values {
		if !seen[folder+"/"+valuesFile] {
			t.Errorf("missing %s/%s", folder, valuesFile)
		}
	}
}

// downloads counts the media requests the server has seen.
func downloads(srv *gcapitest.Server) int {
	n := 0
	for _, r := range srv.Requests() {
		if strings.HasPrefix(r.Path, "/media/") {
			n++
		}
	}
	return n
}

func TestPullArchive(t *testing.T) {
	srv := newServer(t)
	fx := buildArchive(t, srv, 50)
	c := newClient(t, srv)
	dir := t.TempDir()
	ctx := context.Background()

	var prog bytes.Buffer
	res, err := Pull(ctx, c, Options{Archive: testArchive, Out: dir, Progress: &prog}, nil)
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	want := Result{Items: 50, Files: len(fx.files), Downloaded: len(fx.files), Values: 50, Bytes: totalBytes(fx)}
	if res != want {
		t.Errorf("first pull: got %+v, want %+v", res, want)
	}
	checkTree(t, dir, fx)
	if got := downloads(srv); got != len(fx.files) {
		t.Errorf("first pull made %d media requests, want %d", got, len(fx.files))
	}
	lines := strings.Split(strings.TrimSpace(prog.String()), "\n")
	if got, want := len(lines), len(fx.files)+1; got != want {
		t.Errorf("progress has %d lines, want %d (one per file and a summary)", got, want)
	}
	if !strings.Contains(prog.String(), "downloaded case03/report.pdf") {
		t.Errorf("progress does not name case03/report.pdf:\n%s", prog.String())
	}

	t.Run("second pull downloads nothing", func(t *testing.T) {
		before := downloads(srv)
		res, err := Pull(ctx, c, Options{Archive: testArchive, Out: dir}, nil)
		if err != nil {
			t.Fatalf("Pull: %v", err)
		}
		want := Result{Items: 50, Files: len(fx.files), Skipped: len(fx.files), Values: 50}
		if res != want {
			t.Errorf("got %+v, want %+v", res, want)
		}
		if got := downloads(srv) - before; got != 0 {
			t.Errorf("second pull made %d media requests, want 0", got)
		}
		checkTree(t, dir, fx)
	})

	t.Run("damaged and replaced files are downloaded again", func(t *testing.T) {
		// A file cut short, a file whose download record is lost, and a
		// value replaced on the server since the last pull.
		if err := os.Truncate(filepath.Join(dir, "case01", "ct.mha"), 10); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(dir, "case02", manifestFile)); err != nil {
			t.Fatal(err)
		}
		it := itemByTitle(t, srv, "case04")
		pdf := []byte("%PDF-1.4 new report")
		if err := srv.AddFileValue(it.PK, "report", "report.pdf", pdf); err != nil {
			t.Fatal(err)
		}
		fx.files["case04/report.pdf"] = pdf

		before := downloads(srv)
		res, err := Pull(ctx, c, Options{Archive: testArchive, Out: dir, Verify: true}, nil)
		if err != nil {
			t.Fatalf("Pull: %v", err)
		}
		// case01/ct.mha, case02/ct.mha, case04/report.pdf (new to the item).
		if res.Downloaded != 3 || downloads(srv)-before != 3 {
			t.Errorf("downloaded %d files with %d media requests, want 3 and 3 (result %+v)",
				res.Downloaded, downloads(srv)-before, res)
		}
		checkTree(t, dir, fx)
	})
}

func totalBytes(fx *archiveFixture) int64 {
	var n int64
	for _, b := range fx.files {
		n += int64(len(b))
	}
	return n
}

func itemByTitle(t *testing.T, srv *gcapitest.Server, title string) gcapitest.ArchiveItem {
	t.Helper()
	for _, it := range srv.Items(testArchive) {
		if it.Title == title {
			return it
		}
	}
	t.Fatalf("no item %q", title)
	return gcapitest.ArchiveItem{}
}

// interruptingClient cuts the k-th download off halfway, as a lost
// connection or a Ctrl-C would, and cancels the pull.
type interruptingClient struct {
	Client
	k        int32
	calls    atomic.Int32
	atCancel atomic.Int32 // downloads started when it cancelled
	cancel   context.CancelFunc
}

func (c *interruptingClient) Download(ctx context.Context, u string, w io.Writer) (int64, error) {
	if c.calls.Add(1) != c.k {
		return c.Client.Download(ctx, u, w)
	}
	var buf bytes.Buffer
	if _, err := c.Client.Download(ctx, u, &buf); err != nil {
		return 0, err
	}
	n, err := w.Write(buf.Bytes()[:buf.Len()/2])
	if err != nil {
		return int64(n), err
	}
	c.atCancel.Store(c.calls.Load())
	c.cancel()
	return int64(n), fmt.Errorf("GET %s: %w", u, context.Canceled)
}

func TestPullInterruptedResumes(t *testing.T) {
	srv := newServer(t)
	fx := buildArchive(t, srv, 20)
	c := newClient(t, srv)
	dir := t.TempDir()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ic := &interruptingClient{Client: c, k: 8, cancel: cancel}
	res, err := Pull(ctx, ic, Options{Archive: testArchive, Out: dir, Concurrency: 2}, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted Pull: err = %v, want context.Canceled", err)
	}
	if res.Downloaded >= len(fx.files) {
		t.Fatalf("interrupted pull downloaded all %d files; the test interrupted nothing", res.Downloaded)
	}
	// Cancelling stops the pull: no download starts after it, but for one
	// the other worker may have begun in the same instant. (While the cut
	// download was still running, the other worker went on with its own.)
	if got, limit := ic.calls.Load(), ic.atCancel.Load()+1; got > limit {
		t.Errorf("%d downloads started, want at most %d: %d when it cancelled at the %dth, and one more in flight", got, limit, ic.atCancel.Load(), ic.k)
	}

	// Whatever is under a final name is complete; nothing half-written is.
	complete := 0
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if strings.HasSuffix(rel, partSuffix) {
			t.Errorf("partial download left behind: %s", rel)
		}
		if want, ok := fx.files[rel]; ok {
			got, _ := os.ReadFile(p)
			if !bytes.Equal(got, want) {
				t.Errorf("%s holds %d bytes of %d under its final name", rel, len(got), len(want))
			}
			complete++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if complete != res.Downloaded {
		t.Errorf("%d complete files on disk, result says %d downloaded", complete, res.Downloaded)
	}

	// A process killed mid-download leaves a .part behind: plant garbage
	// ones for every file still missing.
	planted := 0
	for rel := range fx.files {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p+partSuffix, []byte("garbage from a killed run"), 0o644); err != nil {
				t.Fatal(err)
			}
			planted++
		}
	}

	before := downloads(srv)
	res2, err := Pull(context.Background(), c, Options{Archive: testArchive, Out: dir}, nil)
	if err != nil {
		t.Fatalf("resumed Pull: %v", err)
	}
	if res2.Skipped != complete || res2.Downloaded != len(fx.files)-complete || res2.Downloaded != planted {
		t.Errorf("resumed pull: %+v; want %d skipped and %d downloaded", res2, complete, len(fx.files)-complete)
	}
	if got := downloads(srv) - before; got != res2.Downloaded {
		t.Errorf("resumed pull made %d media requests, want %d", got, res2.Downloaded)
	}
	checkTree(t, dir, fx)
}

// flakyClient loses the connection halfway through the first download of
// every third file, after half the bytes went to the file, as a proxy
// dropping the connection would. Only first attempts are cut, so that the
// test does not depend on how concurrent downloads interleave.
type flakyClient struct {
	Client
	mu    sync.Mutex
	seen  map[string]bool
	calls int
	cuts  atomic.Int32
}

func (c *flakyClient) Download(ctx context.Context, u string, w io.Writer) (int64, error) {
	c.mu.Lock()
	first := !c.seen[u]
	if c.seen == nil {
		c.seen = map[string]bool{}
	}
	c.seen[u] = true
	if first {
		c.calls++
	}
	cut := first && c.calls%3 == 0
	c.mu.Unlock()
	if !cut {
		return c.Client.Download(ctx, u, w)
	}
	var buf bytes.Buffer
	if _, err := c.Client.Download(ctx, u, &buf); err != nil {
		return 0, err
	}
	n, err := w.Write(buf.Bytes()[:buf.Len()/2])
	if err != nil {
		return int64(n), err
	}
	c.cuts.Add(1)
	return int64(n), fmt.Errorf("GET %s: %w", u, io.ErrUnexpectedEOF)
}

func TestPullRetriesCutDownloads(t *testing.T) {
	srv := newServer(t)
	fx := buildArchive(t, srv, 20)
	fc := &flakyClient{Client: newClient(t, srv)}
	dir := t.TempDir()

	res, err := Pull(context.Background(), fc, Options{Archive: testArchive, Out: dir}, nil)
	if err != nil {
		t.Fatalf("Pull: %v (result %+v)", err, res)
	}
	if fc.cuts.Load() == 0 {
		t.Fatal("no download was cut; the test proves nothing")
	}
	// Bytes counts complete files only, not the halves thrown away.
	want := Result{Items: 20, Files: len(fx.files), Downloaded: len(fx.files), Values: 20, Bytes: totalBytes(fx)}
	if res != want {
		t.Errorf("got %+v, want %+v", res, want)
	}
	checkTree(t, dir, fx)
}

func TestPullConnectionResetsThenResume(t *testing.T) {
	srv := newServer(t)
	fx := buildArchive(t, srv, 20)
	c := newClient(t, srv)
	dir := t.TempDir()

	// A third of the signed media responses are cut off. Some files may
	// fail; none may be left half-written.
	srv.SetFaults(gcapitest.Faults{RateReset: 0.34, PathPrefix: "/s3media"})
	res, err := Pull(context.Background(), c, Options{Archive: testArchive, Out: dir, Attempts: 2}, nil)
	resets := 0
	for _, r := range srv.Requests() {
		if r.Fault == "reset" {
			resets++
		}
	}
	if resets == 0 {
		t.Fatal("no response was cut off; the test proves nothing")
	}
	t.Logf("with %d resets: %+v, err: %v", resets, res, err != nil)
	assertNoParts(t, dir)
	for rel, want := range fx.files {
		got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
		if err == nil && !bytes.Equal(got, want) {
			t.Errorf("%s holds %d bytes of %d under its final name", rel, len(got), len(want))
		}
	}

	srv.SetFaults(gcapitest.Faults{})
	res2, err := Pull(context.Background(), c, Options{Archive: testArchive, Out: dir}, nil)
	if err != nil {
		t.Fatalf("resumed Pull: %v", err)
	}
	if res2.Downloaded != res.Failed || res2.Skipped != res.Downloaded {
		t.Errorf("resumed pull %+v after %+v: want the failed ones downloaded, the rest skipped", res2, res)
	}
	checkTree(t, dir, fx)
}

func TestPullPersistentFailureReported(t *testing.T) {
	srv := newServer(t)
	fx := buildArchive(t, srv, 4)
	c := newClient(t, srv)
	dir := t.TempDir()

	// Every signed media response is cut off: nothing can be downloaded.
	srv.SetFaults(gcapitest.Faults{RateReset: 1, PathPrefix: "/s3media"})
	res, err := Pull(context.Background(), c, Options{Archive: testArchive, Out: dir, Attempts: 2}, nil)
	if err == nil {
		t.Fatal("Pull succeeded though every download was cut off")
	}
	if res.Failed != len(fx.files) || res.Downloaded != 0 {
		t.Errorf("got %+v, want all %d files failed", res, len(fx.files))
	}
	// The error names the item, the interface and the URL.
	msg := err.Error()
	for _, s := range []string{`item "case00"`, "interface ct", srv.URL + "/media/images/"} {
		if !strings.Contains(msg, s) {
			t.Errorf("error does not contain %q:\n%s", s, msg)
		}
	}
	// JSON values do not depend on downloads and are there.
	if _, err := os.Stat(filepath.Join(dir, "case00", valuesFile)); err != nil {
		t.Errorf("values.json missing after failed downloads: %v", err)
	}
	assertNoParts(t, dir)
}

func assertNoParts(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && (strings.HasSuffix(p, partSuffix) || strings.HasSuffix(p, ".tmp")) {
			t.Errorf("left behind: %s", p)
		}
		return err
	})
}

func TestPullHostileTitles(t *testing.T) {
	srv := newServer(t)
	fx := &archiveFixture{files: map[string][]byte{}, values: map[string]json.RawMessage{}}
	rng := rand.New(rand.NewPCG(3, 4))
	titles := []struct{ title, folder string }{
		{"../../etc/passwd", "____etc_passwd"},
		{"/etc/shadow", "_etc_shadow"},
		{"evil\x1b]0;pwned\x07\nname\u202e", "evil_]0;pwned__name_"},
		{"..", ""}, // no usable name: the pk
		{"a/b", ""},
		{"a_b", ""}, // collides with "a/b": both get their pk
		{".hidden", "_hidden"},
	}
	for i, tt := range titles {
		folder := tt.folder
		if folder == "" {
			folder = fmt.Sprintf("pending-%d", i) // renamed below once the pk is known
		}
		addItem(t, srv, fx, rng, i, tt.title, folder)
	}
	// Map the pending folders to the names Pull must choose.
	for i, tt := range titles {
		if tt.folder != "" {
			continue
		}
		it := itemByTitle(t, srv, tt.title)
		want := it.PK
		if tt.title != ".." {
			want = "a_b [" + it.PK + "]"
		}
		renameFolder(fx, fmt.Sprintf("pending-%d", i), want)
	}

	base := t.TempDir()
	dir := filepath.Join(base, "x", "y", "out")
	res, err := Pull(context.Background(), newClient(t, srv), Options{Archive: testArchive, Out: dir}, nil)
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	if res.Downloaded != len(fx.files) {
		t.Errorf("downloaded %d files, want %d", res.Downloaded, len(fx.files))
	}
	checkTree(t, dir, fx)

	// Nothing was written outside DIR.
	filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if rel, _ := filepath.Rel(dir, p); strings.HasPrefix(rel, "..") && !strings.HasPrefix(dir, p) {
			t.Errorf("written outside the output folder: %s", p)
		}
		return nil
	})
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		for _, r := range e.Name() {
			if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
				t.Errorf("folder %q holds control character %U", e.Name(), r)
			}
		}
	}
}

func renameFolder(fx *archiveFixture, from, to string) {
	for rel, b := range fx.files {
		if strings.HasPrefix(rel, from+"/") {
			delete(fx.files, rel)
			fx.files[to+strings.TrimPrefix(rel, from)] = b
		}
	}
	if v, ok := fx.values[from]; ok {
		delete(fx.values, from)
		fx.values[to] = v
	}
}

func TestPullSymlinkedFolderStaysInside(t *testing.T) {
	srv := newServer(t)
	fx := buildArchive(t, srv, 1)
	base := t.TempDir()
	dir := filepath.Join(base, "out")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{dir, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Someone planted the item's folder as a link out of DIR.
	if err := os.Symlink(outside, filepath.Join(dir, "case00")); err != nil {
		t.Skipf("cannot create symlink: %v", err)
	}
	_, err := Pull(context.Background(), newClient(t, srv), Options{Archive: testArchive, Out: dir}, nil)
	if err == nil {
		t.Error("Pull followed a link out of the output folder without an error")
	}
	ents, _ := os.ReadDir(outside)
	if len(ents) != 0 {
		t.Errorf("Pull wrote %d entries outside the output folder", len(ents))
	}
	_ = fx
}

func TestPullInterfaceFilter(t *testing.T) {
	srv := newServer(t)
	fx := buildArchive(t, srv, 6)
	c := newClient(t, srv)

	t.Run("files of one socket", func(t *testing.T) {
		dir := t.TempDir()
		res, err := Pull(context.Background(), c, Options{Archive: testArchive, Out: dir, Interfaces: []string{"report"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := onlyFiles(fx, "/report.pdf")
		if res.Downloaded != len(want.files) || res.Values != 0 {
			t.Errorf("got %+v, want %d downloads and no values", res, len(want.files))
		}
		checkTree(t, dir, want)
	})

	t.Run("values of one socket added to an earlier pull", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := Pull(context.Background(), c, Options{Archive: testArchive, Out: dir, Interfaces: []string{"ct"}}, nil); err != nil {
			t.Fatal(err)
		}
		// An earlier values.json with another socket's value is kept.
		vpath := filepath.Join(dir, "case00", valuesFile)
		if err := os.WriteFile(vpath, []byte(`{"other": true}`), 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := Pull(context.Background(), c, Options{Archive: testArchive, Out: dir, Interfaces: []string{"volume"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.Values != 6 || res.Files != 0 {
			t.Errorf("got %+v, want 6 values and no files", res)
		}
		want := onlyFiles(fx, "/ct.mha", "/ct.tif")
		want.values = fx.values
		want.values["case00"] = json.RawMessage("{\n  \"other\": true,\n  \"volume\": 0.5\n}\n")
		checkTree(t, dir, want)
	})

	t.Run("unknown socket fails before anything is written", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "out")
		_, err := Pull(context.Background(), c, Options{Archive: testArchive, Out: dir, Interfaces: []string{"report", "no-such-socket"}}, nil)
		if err == nil || !strings.Contains(err.Error(), "no-such-socket") {
			t.Errorf("err = %v, want one naming no-such-socket", err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("output folder created despite the error (stat: %v)", err)
		}
	})
}

// onlyFiles keeps the fixture's files whose path ends in one of suffixes,
// and no values.
func onlyFiles(fx *archiveFixture, suffixes ...string) *archiveFixture {
	out := &archiveFixture{files: map[string][]byte{}, values: map[string]json.RawMessage{}}
	for rel, b := range fx.files {
		for _, s := range suffixes {
			if strings.HasSuffix(rel, s) {
				out.files[rel] = b
			}
		}
	}
	return out
}

func TestPullUnknownArchive(t *testing.T) {
	srv := newServer(t)
	_, err := Pull(context.Background(), newClient(t, srv), Options{Archive: "nope", Out: t.TempDir()}, nil)
	if err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("err = %v, want one naming the archive", err)
	}
}

func TestRenderBar(t *testing.T) {
	tests := []struct {
		done, total int
		want        string
	}{
		{0, 50, "[........................] 0/50 files  1.0 MiB  512.0 KiB/s"},
		{25, 50, "[############............] 25/50 files  1.0 MiB  512.0 KiB/s"},
		{50, 50, "[########################] 50/50 files  1.0 MiB  512.0 KiB/s"},
		{0, 0, "[########################] 0/0 files  1.0 MiB  512.0 KiB/s"},
	}
	for _, tt := range tests {
		if got := renderBar(tt.done, tt.total, 1<<20, 2*time.Second); got != tt.want {
			t.Errorf("renderBar(%d, %d) = %q, want %q", tt.done, tt.total, got, tt.want)
		}
	}
}

func TestProgressPlainLines(t *testing.T) {
	// A pipe is not a terminal: plain lines, no carriage returns.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if isTerminal(w) {
		t.Error("a pipe counts as a terminal")
	}
	var buf bytes.Buffer
	if isTerminal(&buf) {
		t.Error("a buffer counts as a terminal")
	}
	p := newProgress(&buf, 2)
	p.start()
	p.downloaded("a/ct.mha", 2048)
	p.skipped()
	p.stop(true)
	got := buf.String()
	if strings.Contains(got, "\r") {
		t.Errorf("plain progress contains a carriage return: %q", got)
	}
	wantLines := []string{"[1/2] downloaded a/ct.mha (2.0 KiB)", "done: 2/2 files, 0 B downloaded"}
	gotLines := strings.Split(strings.TrimSpace(got), "\n")
	sort.Strings(gotLines)
	sort.Strings(wantLines)
	if strings.Join(gotLines, "|") != strings.Join(wantLines, "|") {
		t.Errorf("progress = %q, want lines %q", gotLines, wantLines)
	}
}

func TestPullJSONStoredAsFile(t *testing.T) {
	// A JSON socket not stored in the database has its value as a file:
	// it is downloaded as <slug>.json, not merged into values.json.
	srv := newServer(t)
	srv.AddJSONFileInterface("annotations", "Anything")
	it := srv.AddItem(testArchive, "case00")
	body := []byte(`{"points": [[1, 2, 3]]}`)
	if err := srv.AddFileValue(it.PK, "annotations", "annotations.json", body); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	res, err := Pull(context.Background(), newClient(t, srv), Options{Archive: testArchive, Out: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Downloaded != 1 || res.Values != 0 {
		t.Errorf("got %+v, want one download and no values", res)
	}
	checkTree(t, dir, &archiveFixture{files: map[string][]byte{"case00/annotations.json": body}})
}

// BenchmarkPull pulls an archive of 40 items with a 256 KiB image each from
// the fake server on loopback. Run with:
//
//	go test -run '^$' -bench Pull -benchmem ./pull/
func BenchmarkPull(b *testing.B) {
	const items, size = 40, 256 << 10
	srv := gcapitest.NewServer(gcapitest.Options{Seed: 1})
	defer srv.Close()
	srv.AddArchive(testArchive, "Lungs")
	srv.AddInterface("ct", "Image")
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range items {
		it := srv.AddItem(testArchive, fmt.Sprintf("case%02d", i))
		if err := srv.AddImageValue(it.PK, "ct", "scan.mha", randomBytes(rng, size)); err != nil {
			b.Fatal(err)
		}
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c, err := gcapi.New(srv.URL, srv.Token(), gcapi.WithHTTPClient(&http.Client{Transport: tr}))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		dir := b.TempDir()
		b.StartTimer()
		res, err := Pull(context.Background(), c, Options{Archive: testArchive, Out: dir}, nil)
		if err != nil || res.Downloaded != items {
			b.Fatalf("Pull: %+v, %v", res, err)
		}
	}
	elapsed := b.Elapsed().Seconds()
	b.ReportMetric(float64(items*size*b.N)/elapsed/(1<<20), "MiB/s")
	b.ReportMetric(float64(items*b.N)/elapsed, "files/s")
}
