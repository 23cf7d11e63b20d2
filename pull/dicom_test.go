package pull

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

const setSlug = "series"

// setFixture is an archive of items holding DICOM image sets (and a few
// other values), with what the pulled folders must hold: the instances as
// the server stored them, which are de-identified, not the files uploaded.
type setFixture struct {
	srv      *gcapitest.Server
	uploaded map[string]map[string][]byte // item title -> file name -> uploaded bytes
	images   map[string]string            // item title -> image pk
}

// newSetArchive makes n items, each with a DICOM image set of three
// single-frame instances and one of two frames, and a float value.
func newSetArchive(t *testing.T, n int) *setFixture {
	t.Helper()
	srv := newServer(t)
	srv.AddInterface(setSlug, "DICOM Image Set")
	fx := &setFixture{srv: srv, uploaded: map[string]map[string][]byte{}, images: map[string]string{}}
	for i := range n {
		title := fmt.Sprintf("case%02d", i)
		fx.addSet(t, title, int64(i), 3)
		it := itemByTitle(t, srv, title)
		if err := srv.SetValue(it.PK, "volume", []byte(fmt.Sprintf("%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	return fx
}

// addSet gives the item titled title (created if missing) a new DICOM
// image set of k single-frame instances and one multi-frame one.
func (fx *setFixture) addSet(t *testing.T, title string, seed int64, k int) {
	t.Helper()
	var pk string
	for _, it := range fx.srv.Items(testArchive) {
		if it.Title == title {
			pk = it.PK
		}
	}
	if pk == "" {
		pk = fx.srv.AddItem(testArchive, title).PK
	}
	series := fmt.Sprintf("%s.%d", gcapitest.SampleSeriesUID, seed+1)
	files := gcapitest.SampleDICOMSeriesUIDs(seed, k, gcapitest.SampleStudyUID, series)
	files[fmt.Sprintf("IM%06d.dcm", k+1)] = gcapitest.SampleDICOMFrames(seed, 2, k+1, gcapitest.SampleStudyUID, series)
	img, err := fx.srv.AddDICOMImageSetValue(pk, setSlug, title+" series", files)
	if err != nil {
		t.Fatal(err)
	}
	fx.uploaded[title] = files
	fx.images[title] = img
}

// checkSets asserts that every item's set folder holds exactly the
// instances the server stored, byte for byte, and that no staging folder
// or partial file is left.
func (fx *setFixture) checkSets(t *testing.T, dir string) {
	t.Helper()
	for title, pk := range fx.images {
		stored, err := fx.srv.DICOMInstances(pk)
		if err != nil {
			t.Fatal(err)
		}
		folder := filepath.Join(dir, title, setSlug)
		ents, err := os.ReadDir(folder)
		if err != nil {
			t.Fatalf("%s: %v", title, err)
		}
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		var want []string
		for _, in := range stored {
			want = append(want, in.SOPInstanceUID+".dcm")
			b, err := os.ReadFile(filepath.Join(folder, in.SOPInstanceUID+".dcm"))
			if err != nil {
				t.Errorf("%s: %v", title, err)
				continue
			}
			if !bytes.Equal(b, in.Content) {
				t.Errorf("%s/%s/%s.dcm: %d bytes that differ from the %d the server stored", title, setSlug, in.SOPInstanceUID, len(b), len(in.Content))
			}
		}
		sort.Strings(want)
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s/%s holds %v, want %v", title, setSlug, got, want)
		}
		if _, err := os.Stat(folder + partSuffix); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: staging folder left behind (%v)", title, err)
		}
	}
	assertNoParts(t, dir)
}

// requests counts the server's requests whose path has the suffix or
// prefix given.
func requests(srv *gcapitest.Server, match func(string) bool) int {
	n := 0
	for _, r := range srv.Requests() {
		if match(r.Path) {
			n++
		}
	}
	return n
}

func isInstanceGET(p string) bool  { return strings.HasPrefix(p, "/healthimaging/") }
func isInstanceList(p string) bool { return strings.HasSuffix(p, "/dicom/instances/") }

func TestPullDICOMImageSets(t *testing.T) {
	fx := newSetArchive(t, 3)
	c := newClient(t, fx.srv)
	dir := t.TempDir()
	ctx := context.Background()

	var prog bytes.Buffer
	res, err := Pull(ctx, c, Options{Archive: testArchive, Out: dir, Progress: &prog}, nil)
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	if !strings.Contains(prog.String(), "downloaded case00/"+setSlug+"/") || strings.Contains(prog.String(), partSuffix) {
		t.Errorf("progress should name the instances where they end up, in %s/, never in the staging folder:\n%s", setSlug, prog.String())
	}
	// Four instances per set: the multi-frame one is listed twice by the
	// server but downloaded once.
	if res.Files != 12 || res.Downloaded != 12 || res.Values != 3 {
		t.Errorf("result %+v, want 12 files downloaded and 3 values", res)
	}
	if got := requests(fx.srv, isInstanceGET); got != 12 {
		t.Errorf("%d instance downloads, want 12", got)
	}
	fx.checkSets(t, dir)

	t.Run("the server stored de-identified instances, pixel data kept", func(t *testing.T) {
		up := fx.uploaded["case00"]["IM000001.dcm"]
		px := up[bytes.LastIndex(up, []byte{0xE0, 0x7F, 0x10, 0x00}):]
		matches := 0
		err := filepath.WalkDir(filepath.Join(dir, "case00", setSlug), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, u := range fx.uploaded["case00"] {
				if bytes.Equal(b, u) {
					t.Errorf("%s is the uploaded file unchanged; the server de-identifies", p)
				}
			}
			if bytes.HasSuffix(b, px) {
				matches++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if matches != 1 {
			t.Errorf("%d pulled instances end with IM000001.dcm's pixel data, want 1", matches)
		}
	})

	t.Run("readable by dcmdump", func(t *testing.T) {
		dcmdump := lookDcmdump(t)
		ents, err := os.ReadDir(filepath.Join(dir, "case01", setSlug))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			p := filepath.Join(dir, "case01", setSlug, e.Name())
			out, err := exec.Command(dcmdump, "-q", p).CombinedOutput()
			if err != nil {
				t.Fatalf("dcmdump %s: %v\n%s", p, err, out)
			}
			sop := strings.TrimSuffix(e.Name(), ".dcm")
			if !bytes.Contains(out, []byte("(0008,0018) UI ["+sop+"]")) {
				t.Errorf("dcmdump %s does not show SOPInstanceUID %s:\n%s", p, sop, out)
			}
		}
	})

	t.Run("second pull downloads nothing", func(t *testing.T) {
		before := requests(fx.srv, isInstanceGET)
		res, err := Pull(ctx, c, Options{Archive: testArchive, Out: dir, Verify: true}, nil)
		if err != nil {
			t.Fatalf("Pull: %v", err)
		}
		if res.Skipped != 12 || res.Downloaded != 0 {
			t.Errorf("result %+v, want 12 skipped", res)
		}
		if got := requests(fx.srv, isInstanceGET) - before; got != 0 {
			t.Errorf("%d instance downloads, want 0", got)
		}
		fx.checkSets(t, dir)
	})

	t.Run("a replaced set replaces the folder", func(t *testing.T) {
		fx.addSet(t, "case02", 40, 1) // two instances now, new UIDs
		res, err := Pull(ctx, c, Options{Archive: testArchive, Out: dir}, nil)
		if err != nil {
			t.Fatalf("Pull: %v", err)
		}
		if res.Downloaded != 2 || res.Skipped != 8 {
			t.Errorf("result %+v, want 2 downloaded and 8 skipped", res)
		}
		fx.checkSets(t, dir)
	})
}

// lookDcmdump finds dcmtk's dcmdump; without it the test fails on CI
// (CI=true) and is skipped elsewhere.
func lookDcmdump(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("dcmdump")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("dcmdump (dcmtk) is needed on CI: %v", err)
		}
		t.Skipf("dcmdump (dcmtk) not installed, so the pulled instances are not checked with it: %v", err)
	}
	return p
}

// failingSetClient fails the download of one instance (by SOP Instance
// UID) for good.
type failingSetClient struct {
	Client
	bad   string
	calls atomic.Int32
}

func (c *failingSetClient) DownloadSigned(ctx context.Context, req gcapi.SignedRequest, w io.Writer) (int64, error) {
	c.calls.Add(1)
	if strings.HasSuffix(req.URL[:strings.IndexByte(req.URL+"?", '?')], "/"+c.bad) {
		// Half the bytes, then a permanent refusal of the rest.
		var buf bytes.Buffer
		if _, err := c.Client.DownloadSigned(ctx, req, &buf); err != nil {
			return 0, err
		}
		n, _ := w.Write(buf.Bytes()[:buf.Len()/2])
		return int64(n), fmt.Errorf("GET %s: %w", redactURL(req.URL), errors.New("disk quota of the test"))
	}
	return c.Client.DownloadSigned(ctx, req, w)
}

func TestPullDICOMImageSetFailsClosed(t *testing.T) {
	fx := newSetArchive(t, 1)
	c := newClient(t, fx.srv)
	dir := t.TempDir()
	stored, err := fx.srv.DICOMInstances(fx.images["case00"])
	if err != nil {
		t.Fatal(err)
	}
	fc := &failingSetClient{Client: c, bad: stored[2].SOPInstanceUID}
	res, err := Pull(context.Background(), fc, Options{Archive: testArchive, Out: dir, Attempts: 2}, nil)
	if err == nil || res.Failed != 1 || res.Downloaded != 3 {
		t.Fatalf("Pull with one instance failing: %+v, %v; want 1 failed, 3 downloaded and an error", res, err)
	}
	if !strings.Contains(err.Error(), stored[2].SOPInstanceUID) {
		t.Errorf("error %q does not name the instance", err)
	}
	final := filepath.Join(dir, "case00", setSlug)
	if _, err := os.Stat(final); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s exists after a failed set (%v): an incomplete series must not look complete", final, err)
	}
	ents, err := os.ReadDir(final + partSuffix)
	if err != nil || len(ents) != 3 {
		t.Fatalf("staging folder holds %d entries (%v), want the 3 complete instances", len(ents), err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), partSuffix) {
			t.Errorf("partial download %s left in the staging folder", e.Name())
		}
	}

	t.Run("the next pull resumes the set", func(t *testing.T) {
		before := requests(fx.srv, isInstanceGET)
		res, err := Pull(context.Background(), c, Options{Archive: testArchive, Out: dir}, nil)
		if err != nil {
			t.Fatalf("Pull: %v", err)
		}
		if res.Downloaded != 1 || res.Skipped != 3 || requests(fx.srv, isInstanceGET)-before != 1 {
			t.Errorf("result %+v with %d instance downloads, want the one missing instance only", res, requests(fx.srv, isInstanceGET)-before)
		}
		fx.checkSets(t, dir)
	})
}

// expiringClient moves the server's clock past the signatures' lifetime
// just before the first instance download, as a long pull would.
type expiringClient struct {
	Client
	srv  *gcapitest.Server
	done atomic.Bool
}

func (c *expiringClient) DownloadSigned(ctx context.Context, req gcapi.SignedRequest, w io.Writer) (int64, error) {
	if c.done.CompareAndSwap(false, true) {
		c.srv.Advance(gcapitest.SignedRequestExpiry + 1)
	}
	return c.Client.DownloadSigned(ctx, req, w)
}

func TestPullDICOMSignaturesExpire(t *testing.T) {
	fx := newSetArchive(t, 1)
	dir := t.TempDir()
	ec := &expiringClient{Client: newClient(t, fx.srv), srv: fx.srv}
	res, err := Pull(context.Background(), ec, Options{Archive: testArchive, Out: dir, Concurrency: 4}, nil)
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	if res.Downloaded != 4 {
		t.Errorf("result %+v, want 4 downloaded", res)
	}
	// The plan's list and one more after the refusals, however many
	// workers were refused with the same old list.
	if got := requests(fx.srv, isInstanceList); got != 2 {
		t.Errorf("%d instance lists fetched, want 2", got)
	}
	fx.checkSets(t, dir)
}

func TestPullDICOMSymlinkedFolderStaysInside(t *testing.T) {
	fx := newSetArchive(t, 1)
	c := newClient(t, fx.srv)
	dir := t.TempDir()
	outside := t.TempDir()
	keep := filepath.Join(outside, "keep.txt")
	if err := os.WriteFile(keep, []byte("not the pull's"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "case00"), 0o750); err != nil {
		t.Fatal(err)
	}
	// Both the final and the staging name point outside.
	for _, n := range []string{setSlug, setSlug + partSuffix} {
		if err := os.Symlink(outside, filepath.Join(dir, "case00", n)); err != nil {
			t.Skipf("symlinks unavailable: %v", err)
		}
	}
	if _, err := Pull(context.Background(), c, Options{Archive: testArchive, Out: dir}, nil); err != nil {
		t.Fatalf("Pull: %v", err)
	}
	fx.checkSets(t, dir)
	ents, err := os.ReadDir(outside)
	if err != nil || len(ents) != 1 {
		t.Fatalf("the folder outside holds %d entries (%v), want only keep.txt", len(ents), err)
	}
}
