package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/ingest/group"
	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/watch"
)

const (
	ifaceOverlay = "generic-overlay"
	ifaceReport  = "report"
	ifaceVolume  = "lung-volume"
	ifaceNotes   = "notes" // a JSON socket kept as a file
)

// newFolderHarness is a harness whose watch is in folder mode with an
// overlay, a PDF report and JSON values.
func newFolderHarness(t *testing.T, opts gcapitest.Options) *harness {
	t.Helper()
	h := newHarness(t, opts, "move")
	h.srv.AddInterface(ifaceOverlay, "Segmentation")
	h.srv.AddInterface(ifaceReport, "PDF file")
	h.srv.AddInterface(ifaceVolume, "Float")
	h.srv.AddInterface("label", "String")
	h.srv.AddJSONFileInterface(ifaceNotes, "Anything")
	h.watch.Group = watch.GroupFolder
	h.watch.Values = map[string]string{"overlay*.mha": ifaceOverlay, "*.pdf": ifaceReport}
	return h
}

// folder writes the files (name → content) under the folder key and
// returns its group.
func (h *harness) folder(key string, files map[string][]byte) Group {
	h.t.Helper()
	var fs []File
	for name, b := range files {
		fs = append(fs, h.write(key+"/"+name, b))
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].Rel < fs[j].Rel })
	return h.group(KindFolder, key, fs...)
}

// runAll submits the groups to a fresh pipeline and waits until every
// record has nothing left to do.
func (h *harness) runAll(groups ...Group) []state.Image {
	h.t.Helper()
	p := h.pipeline(h.config())
	stop := start(p)
	for _, g := range groups {
		if err := p.Submit(context.Background(), g); err != nil {
			h.t.Fatal(err)
		}
	}
	imgs := h.waitSettled(len(groups))
	if err := stop(); err != nil {
		h.t.Fatal(err)
	}
	return imgs
}

func pdf(seed byte) []byte { return append([]byte("%PDF-1.4\n"), bytes.Repeat([]byte{seed}, 100)...) }

func (h *harness) patches() int {
	n := 0
	for _, r := range h.srv.Requests() {
		if r.Method == "PATCH" && strings.HasPrefix(r.Path, "/api/v1/archives/items/") {
			n++
		}
	}
	return n
}

func valueJSON(t *testing.T, it gcapitest.ArchiveItem, slug string) string {
	t.Helper()
	v := it.Value(slug)
	if v == nil {
		return ""
	}
	return string(v.Value)
}

func TestFolderItemFourValuesOnePatch(t *testing.T) {
	h := newFolderHarness(t, gcapitest.Options{})
	g := h.folder("case1", map[string][]byte{
		"ct.mha":          gcapitest.SampleMHA(1, 8, 8, 4),
		"overlay-seg.mha": gcapitest.SampleMHA(2, 8, 8, 4),
		"report.pdf":      pdf('r'),
		"values.json":     []byte(`{"lung-volume": 1.9}`),
	})
	imgs := h.runAll(g)
	if imgs[0].State != state.Finished {
		t.Fatalf("folder is %s (%s); want finished", imgs[0].State, imgs[0].LastError)
	}
	items := h.srv.Items(testArchive)
	if len(items) != 1 {
		t.Fatalf("archive has %d items; want 1", len(items))
	}
	it := items[0]
	if len(it.Values) != 4 {
		t.Errorf("item has %d values; want 4: %+v", len(it.Values), it.Values)
	}
	for _, slug := range []string{testIface, ifaceOverlay} {
		if v := it.Value(slug); v == nil || v.Image == nil {
			t.Errorf("item has no image for %s", slug)
		}
	}
	if v := it.Value(ifaceReport); v == nil || v.File == nil {
		t.Errorf("item has no file for %s", ifaceReport)
	}
	if got := valueJSON(t, it, ifaceVolume); got != "1.9" {
		t.Errorf("lung-volume = %s; want 1.9", got)
	}
	if got := h.patches(); got != 1 {
		t.Errorf("%d PATCH requests; want the four values in one", got)
	}
	if !strings.HasPrefix(it.Title, "case1 [") {
		t.Errorf("title = %q; want the folder name and hash", it.Title)
	}
	// The overlay is the overlay's bytes, not the main image's.
	ov, err := h.srv.ImageContent(lastSegment(*it.Value(ifaceOverlay).Image))
	if err != nil {
		t.Fatal(err)
	}
	main, _ := h.srv.ImageContent(lastSegment(*it.Value(testIface).Image))
	if bytes.Equal(ov, main) {
		t.Error("overlay and main image hold the same bytes")
	}
	for _, v := range imgs[0].Values {
		if !v.Confirmed {
			t.Errorf("value %s not confirmed in the state file", v.Interface)
		}
	}
	// The whole folder moved, keeping its path under done_dir.
	for _, name := range []string{"ct.mha", "overlay-seg.mha", "report.pdf", "values.json"} {
		if _, err := os.Stat(filepath.Join(h.watch.DoneDir, "case1", name)); err != nil {
			t.Errorf("%s not in done_dir/case1: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(h.watch.Path, "case1")); !os.IsNotExist(err) {
		t.Errorf("case1 still in the drop folder (err %v)", err)
	}
	for _, u := range h.srv.Uploads() {
		t.Errorf("upload %s (%s) left on the server", u.PK, u.Filename)
	}
}

func TestFolderDICOMMainAndJSONFile(t *testing.T) {
	h := newFolderHarness(t, gcapitest.Options{})
	files := map[string][]byte{"values.json": []byte(`{"notes": {"a": [1, 2]}, "label": "left"}`)}
	for name, b := range gcapitest.SampleDICOMSeries(3) {
		files["series/"+name] = b
	}
	imgs := h.runAll(h.folder("c2", files))
	if imgs[0].State != state.Finished {
		t.Fatalf("folder is %s (%s); want finished", imgs[0].State, imgs[0].LastError)
	}
	it := h.srv.Items(testArchive)[0]
	if v := it.Value(testIface); v == nil || v.Image == nil {
		t.Error("no image from the DICOM series")
	}
	if v := it.Value(ifaceNotes); v == nil || v.File == nil {
		t.Error("no file for the JSON socket kept as a file")
	}
	if got := valueJSON(t, it, "label"); got != `"left"` {
		t.Errorf("label = %s; want \"left\"", got)
	}
	if n := len(h.srv.Images()); n != 1 {
		t.Errorf("server built %d images; want 1 (the series as one ZIP)", n)
	}
}

func TestFolderAddsToExistingItem(t *testing.T) {
	for _, replace := range []bool{false, true} {
		t.Run("replace="+map[bool]string{false: "false", true: "true"}[replace], func(t *testing.T) {
			h := newFolderHarness(t, gcapitest.Options{})
			h.watch.Replace = replace
			existing := h.srv.AddItem(testArchive, "patient 7")
			if err := h.srv.SetValue(existing.PK, ifaceVolume, json.RawMessage(`1.2`)); err != nil {
				t.Fatal(err)
			}
			// First folder: a value the item lacks. Added either way.
			add := h.folder("add", map[string][]byte{"item.txt": []byte(existing.PK + "\n"), "report.pdf": pdf('a')})
			// Second folder: a value the item has.
			repl := h.folder("repl", map[string][]byte{"item.txt": []byte(existing.PK), "values.json": []byte(`{"lung-volume": 2.5}`)})
			imgs := h.runAll(add)
			if imgs[0].State != state.Finished {
				t.Fatalf("adding folder is %s (%s); want finished", imgs[0].State, imgs[0].LastError)
			}
			before := h.srv.Stats()
			imgs = h.runAll(repl)
			items := h.srv.Items(testArchive)
			if len(items) != 1 {
				t.Fatalf("archive has %d items; want only the existing one", len(items))
			}
			it := items[0]
			if it.Title != "patient 7" {
				t.Errorf("title = %q; want it unchanged", it.Title)
			}
			if v := it.Value(ifaceReport); v == nil || v.File == nil {
				t.Error("the report was not added to the existing item")
			}
			got := valueJSON(t, it, ifaceVolume)
			r := imgs[1]
			if !replace {
				if r.State != state.Failed {
					t.Fatalf("replacing folder is %s; want failed", r.State)
				}
				want := "item " + existing.PK + " already has a value for lung-volume; set replace = true on the watch to replace it"
				if r.LastError != want {
					t.Errorf("error = %q; want %q", r.LastError, want)
				}
				if got != "1.2" {
					t.Errorf("lung-volume = %s; want 1.2 kept", got)
				}
				if after := h.srv.Stats(); after.Creates != before.Creates {
					t.Errorf("the refused folder created or changed something on the server: %+v → %+v", before, after)
				}
				note, err := os.ReadFile(filepath.Join(h.watch.FailedDir, "repl.error.txt"))
				if err != nil || !strings.Contains(string(note), want) {
					t.Errorf("failed_dir/repl.error.txt = %q (%v); want the reason", note, err)
				}
				if _, err := os.Stat(filepath.Join(h.watch.FailedDir, "repl", "values.json")); err != nil {
					t.Errorf("folder not moved to failed_dir: %v", err)
				}
				return
			}
			if r.State != state.Finished {
				t.Fatalf("replacing folder is %s (%s); want finished", r.State, r.LastError)
			}
			if got != "2.5" {
				t.Errorf("lung-volume = %s; want 2.5", got)
			}
		})
	}
}

func TestFolderBadInputUploadsNothing(t *testing.T) {
	mha := gcapitest.SampleMHA(3, 4, 4, 2)
	cases := []struct {
		name  string
		files map[string][]byte
		want  string // in the error
	}{
		{"values.json not JSON", map[string][]byte{"ct.mha": mha, "values.json": []byte(`{"lung-volume": 1.9`)}, "values.json in bad: not a JSON object"},
		{"values.json a list", map[string][]byte{"ct.mha": mha, "values.json": []byte(`[1.9]`)}, "not a JSON object"},
		{"unknown interface", map[string][]byte{"ct.mha": mha, "values.json": []byte(`{"lung-volum": 1.9}`)}, "values.json names lung-volum, which the server does not know"},
		{"wrong type", map[string][]byte{"ct.mha": mha, "values.json": []byte(`{"lung-volume": "1.9"}`)}, `a Float interface needs a number, not "1.9"`},
		{"null", map[string][]byte{"ct.mha": mha, "values.json": []byte(`{"lung-volume": null}`)}, "needs a number, not null"},
		{"JSON for a file interface", map[string][]byte{"ct.mha": mha, "values.json": []byte(`{"report": "x"}`)}, "put the file in the folder"},
		{"two files for one file interface", map[string][]byte{"ct.mha": mha, "a.pdf": pdf('a'), "b.pdf": pdf('b')}, "2 files match \"*.pdf\" for report"},
		{"two main images", map[string][]byte{"ct.mha": mha, "ct2.mha": gcapitest.SampleMHA(4, 4, 4, 2)}, "the files make 2 images"},
		{"unknown main file", map[string][]byte{"ct.mha": mha, "readme.docx": []byte("hello, this is not an image at all, just some words to be long enough for a sniff")}, "unknown file type"},
		{"no main image", map[string][]byte{"report.pdf": pdf('r')}, "has no main image"},
		{"item.txt with junk", map[string][]byte{"item.txt": []byte("not a pk\nsecond line"), "report.pdf": pdf('r')}, "must hold the pk of an archive item"},
		{"item.txt unknown item", map[string][]byte{"item.txt": []byte("8d2d3c43-0000-0000-0000-000000000000"), "report.pdf": pdf('r')}, "does not exist"},
		{"values.json and pattern for one interface", map[string][]byte{"ct.mha": mha, "r.pdf": pdf('r'), "values.json": []byte(`{"report": 1}`)}, "one interface takes one value"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newFolderHarness(t, gcapitest.Options{})
			imgs := h.runAll(h.folder("bad", c.files))
			img := imgs[0]
			if img.State != state.Failed || !strings.Contains(img.LastError, c.want) {
				t.Errorf("folder is %s with %q; want failed with %q", img.State, img.LastError, c.want)
			}
			st := h.srv.Stats()
			if st.UploadCreates != 0 || st.ItemCreates != 0 || st.ItemUpdates != 0 {
				t.Errorf("server saw %d upload creates, %d item creates, %d item updates; want none", st.UploadCreates, st.ItemCreates, st.ItemUpdates)
			}
			note, err := os.ReadFile(filepath.Join(h.watch.FailedDir, "bad.error.txt"))
			if err != nil || !strings.Contains(string(note), c.want) {
				t.Errorf("failed_dir/bad.error.txt = %q (%v); want the reason", note, err)
			}
		})
	}
}

func TestFolderPatternMatchingNothingIsFine(t *testing.T) {
	h := newFolderHarness(t, gcapitest.Options{})
	imgs := h.runAll(h.folder("only-ct", map[string][]byte{"ct.mha": gcapitest.SampleMHA(5, 4, 4, 2)}))
	if imgs[0].State != state.Finished {
		t.Fatalf("folder is %s (%s); want finished: optional values may be absent", imgs[0].State, imgs[0].LastError)
	}
	if it := h.srv.Items(testArchive)[0]; len(it.Values) != 1 {
		t.Errorf("item has %d values; want 1", len(it.Values))
	}
}

func TestPlanShowsFolderValues(t *testing.T) {
	h := newFolderHarness(t, gcapitest.Options{})
	h.folder("case1", map[string][]byte{
		"ct.mha":          gcapitest.SampleMHA(1, 8, 8, 4),
		"overlay-seg.mha": gcapitest.SampleMHA(2, 8, 8, 4),
		"report.pdf":      pdf('r'),
		"values.json":     []byte(`{"lung-volume": 1.9}`),
	})
	h.folder("bad", map[string][]byte{"a.pdf": pdf('a'), "b.pdf": pdf('b'), "ct.mha": gcapitest.SampleMHA(1, 8, 8, 4)})
	rep, err := group.Plan(context.Background(), h.watch.Spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"ct-image ← case1/ct.mha",
		"generic-overlay ← case1/overlay-seg.mha",
		"report ← case1/report.pdf",
		"lung-volume ← 1.9 from case1/values.json",
		"report ← bad/a.pdf, bad/b.pdf",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
	if len(rep.Entries) != 2 || len(rep.Entries[1].Values) != 4 {
		t.Fatalf("entries = %+v; want case1 with 4 values", rep.Entries)
	}
}

// TestCrashAnywhereFolders kills the pipeline at its n-th event, for
// n = 1, 2, …, over folder items: a new item with five values (one of them
// a two-part upload), a DICOM series with a JSON value, and values added
// to (and one replacing a value of) an existing item. In the end every
// folder is finished, each item holds exactly its values, no item was
// created twice, no image imported twice and no upload is left open.
func TestCrashAnywhereFolders(t *testing.T) {
	for _, faults := range []bool{false, true} {
		t.Run(map[bool]string{false: "clean", true: "faults"}[faults], func(t *testing.T) {
			h, groups := crashFolders(t)
			if faults {
				h.srv.SetFaults(gcapitest.Faults{Rate5xx: 0.08, Rate500: 0.04, Rate429: 0.04, RateReset: 0.04, RetryAfter: time.Millisecond})
			}
			crashes := 0
			for n := 1; ; n++ {
				ctx, cancel := context.WithCancel(context.Background())
				c := &crasher{n: n, cancel: cancel}
				cfg := h.config()
				cfg.PartSize = 5 << 20
				cfg.BeforeStep = func(uint64, state.State) error { return c.tick() }
				p := NewPipeline(cfg, h.store, h.learning(crashAPI{API: h.api, c: c}), nil)
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
				if done {
					break
				}
				crashes++
				h.reopen()
				if n > 3000 {
					t.Fatal("not done after 3000 crashes")
				}
			}
			h.srv.SetFaults(gcapitest.Faults{})
			checkCrashFolders(t, h, groups)
			t.Logf("%d crash points", crashes)
		})
	}
}

// crashFolders sets up the folders of the crash tests: a new item with
// five values (one of them a two-part upload), a DICOM series with a JSON
// value, and values added to (one replacing a value of) an existing item.
func crashFolders(t *testing.T) (*harness, []Group) {
	h := newFolderHarness(t, gcapitest.Options{Seed: 13})
	h.watch.Replace = true
	existing := h.srv.AddItem(testArchive, "existing")
	if err := h.srv.SetValue(existing.PK, ifaceVolume, json.RawMessage(`1.0`)); err != nil {
		t.Fatal(err)
	}
	dicom := map[string][]byte{"values.json": []byte(`{"label": "x"}`)}
	for name, b := range gcapitest.SampleDICOMSeries(2) {
		dicom[name] = b
	}
	return h, []Group{
		h.folder("f1", map[string][]byte{
			"ct.mha":      gcapitest.SampleMHA(1, 4, 4, 2),
			"overlay.mha": gcapitest.SampleMHA(2, 4, 4, 2),
			"report.pdf":  append(pdf('p'), make([]byte, 6<<20)...), // two parts
			"values.json": []byte(`{"lung-volume": 1.9, "notes": {"k": "v"}}`),
		}),
		h.folder("f2", dicom),
		h.folder("f3", map[string][]byte{
			"item.txt":    []byte(existing.PK),
			"report.pdf":  pdf('q'),
			"values.json": []byte(`{"lung-volume": 3.5}`),
		}),
	}
}

// checkCrashFolders asserts the end state of the crash tests: every folder
// finished, each item holding exactly its values, no item created twice,
// no image imported twice, no upload left open.
func checkCrashFolders(t *testing.T, h *harness, groups []Group) {
	t.Helper()
	for _, img := range h.waitSettled(len(groups)) {
		if img.State != state.Finished {
			t.Errorf("folder %s is %s (%s); want finished", img.Key, img.State, img.LastError)
		}
	}
	items := h.srv.Items(testArchive)
	if len(items) != 3 {
		t.Fatalf("archive has %d items; want 3 (two new, one existing)", len(items))
	}
	want := map[string][]string{
		"f1":       {testIface, ifaceOverlay, ifaceReport, ifaceVolume, ifaceNotes},
		"f2":       {testIface, "label"},
		"existing": {ifaceVolume, ifaceReport},
	}
	for _, it := range items {
		name, _, _ := strings.Cut(it.Title, " ")
		var got []string
		for _, v := range it.Values {
			got = append(got, v.Interface.Slug)
		}
		sort.Strings(got)
		w := append([]string(nil), want[name]...)
		sort.Strings(w)
		if strings.Join(got, ",") != strings.Join(w, ",") {
			t.Errorf("item %q holds %v; want %v", it.Title, got, w)
		}
		if name == "existing" && valueJSON(t, it, ifaceVolume) != "3.5" {
			t.Errorf("existing item's lung-volume = %s; want 3.5", valueJSON(t, it, ifaceVolume))
		}
	}
	if n := len(h.srv.Images()); n != 3 {
		t.Errorf("server built %d images; want 3 (an image imported twice or a value replaced)", n)
	}
	for _, u := range h.srv.Uploads() {
		if u.Status != gcapi.UploadInitialized {
			continue
		}
		// One whose create answer never reached the agent is not ours to
		// abort (see checkArchive); every upload the agent learnt of is.
		if h.learnt.unlearnt(u.PK) {
			t.Logf("upload %s (%s) left Initialized: its create's answer never reached the agent", u.PK, u.Filename)
			continue
		}
		t.Errorf("upload %s (%s) left Initialized", u.PK, u.Filename)
	}
}

// TestCrashAtEveryEventFolders starts from scratch for each crash point n:
// one run killed at its n-th event, then one clean run on the reopened
// state file, then the exactly-once assertions. Every event is a crash
// point with GCINGEST_SOAK=1; otherwise every fourth.
func TestCrashAtEveryEventFolders(t *testing.T) {
	stride := 4
	if os.Getenv("GCINGEST_SOAK") != "" {
		stride = 1
	}
	h, groups := crashFolders(t)
	counter := &crasher{n: 1 << 30}
	runCrashing(t, h, groups, counter)
	total := counter.seen
	for n := 1; n <= total; n += stride {
		t.Run(fmt.Sprintf("event %d of %d", n, total), func(t *testing.T) {
			h, groups := crashFolders(t)
			runCrashing(t, h, groups, &crasher{n: n})
			h.reopen()
			runCrashing(t, h, groups, nil)
			checkCrashFolders(t, h, groups)
			if n := h.strays(); n > 2 {
				t.Errorf("%d uploads the agent never learnt of left Initialized; one crash with 2 workers loses at most 2", n)
			}
		})
	}
}

// The obvious fix works: a folder failed for two PDFs; the operator deletes
// one in failed_dir and retries. The folder goes back whole, in one
// rename, the removed file is no error, and the folder lands as it now is.
func TestRetryAfterRemovingAFileInFailedDir(t *testing.T) {
	h := newFolderHarness(t, gcapitest.Options{})
	mha := gcapitest.SampleMHA(3, 4, 4, 2)
	imgs := h.runAll(h.folder("two", map[string][]byte{"ct.mha": mha, "a.pdf": pdf('a'), "b.pdf": pdf('b')}))
	if imgs[0].State != state.Failed || !strings.Contains(imgs[0].LastError, "2 files match") {
		t.Fatalf("folder is %s (%s); want failed for two PDFs", imgs[0].State, imgs[0].LastError)
	}
	if err := os.Remove(filepath.Join(h.watch.FailedDir, "two", "b.pdf")); err != nil {
		t.Fatal(err)
	}
	p := h.pipeline(h.config())
	if _, err := p.RetryFailed(context.Background()); err != nil {
		t.Fatalf("retry after removing b.pdf: %v", err)
	}
	for _, name := range []string{"ct.mha", "a.pdf"} {
		if _, err := os.Stat(filepath.Join(h.watch.Path, "two", name)); err != nil {
			t.Errorf("%s not back in the drop folder: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(h.watch.FailedDir, "two")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed_dir/two still there after the folder went back (%v)", err)
	}
	stop := start(p)
	got := h.waitSettled(1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got[0].State != state.Finished || len(got[0].Files) != 2 {
		t.Fatalf("after the retry: %s (%s) with %d files; want finished with ct.mha and a.pdf", got[0].State, got[0].LastError, len(got[0].Files))
	}
	if n := len(h.srv.Items(testArchive)); n != 1 {
		t.Errorf("archive has %d items; want 1", n)
	}
}

// A file in failed_dir that is not the one sent (hashed, then changed)
// refuses the retry, and nothing is moved: no half-restored folder for the
// grouper to find.
func TestRetryRefusedMovesNothing(t *testing.T) {
	h := newFolderHarness(t, gcapitest.Options{})
	h.srv.SetFaults(gcapitest.Faults{FailImport: func([]string) string { return "corrupt image" }})
	mha := gcapitest.SampleMHA(3, 4, 4, 2)
	imgs := h.runAll(h.folder("two", map[string][]byte{"ct.mha": mha, "a.pdf": pdf('a')}))
	if imgs[0].State != state.Failed || imgs[0].Files[0].SHA256 == "" {
		t.Fatalf("folder is %s (%s); want failed at import, its files hashed", imgs[0].State, imgs[0].LastError)
	}
	// ct.mha is checked after a.pdf: moving as it checks would leave
	// a.pdf back in the drop folder, a half-restored folder.
	if err := os.WriteFile(filepath.Join(h.watch.FailedDir, "two", "ct.mha"), gcapitest.SampleMHA(9, 4, 4, 2), 0o644); err != nil {
		t.Fatal(err)
	}
	p := h.pipeline(h.config())
	if _, err := p.RetryFailed(context.Background()); err == nil || !strings.Contains(err.Error(), "nothing was moved back") {
		t.Fatalf("retry with a changed b.pdf: %v; want refused, nothing moved", err)
	}
	if _, err := os.Stat(filepath.Join(h.watch.Path, "two")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the drop folder holds two/ after a refused retry (%v)", err)
	}
}

// A folder fixed in place after it failed comes back as a new image; once
// that one lands, the failed record is superseded: it no longer counts as
// failed, so an alert on failed images clears, and it keeps its story.
func TestFixedInPlaceSupersedesTheFailure(t *testing.T) {
	h := newFolderHarness(t, gcapitest.Options{})
	h.watch.FailedDir = "" // the files stay where they are
	mha := gcapitest.SampleMHA(3, 4, 4, 2)
	imgs := h.runAll(h.folder("two", map[string][]byte{"ct.mha": mha, "a.pdf": pdf('a'), "b.pdf": pdf('b')}))
	if imgs[0].State != state.Failed {
		t.Fatalf("folder is %s (%s); want failed for two PDFs", imgs[0].State, imgs[0].LastError)
	}
	if err := os.Remove(filepath.Join(h.watch.Path, "two", "b.pdf")); err != nil {
		t.Fatal(err)
	}
	imgs = h.runAll(h.group(KindFolder, "two", h.stat("two/a.pdf"), h.stat("two/ct.mha")))
	if len(imgs) != 2 || imgs[1].State != state.Finished {
		t.Fatalf("records %+v; want the fixed folder finished", imgs)
	}
	// Superseded right after the new image's finished commit, which its
	// worker does not wait for (finishLater).
	var old state.Image
	eventually(t, 10*time.Second, "the failed record superseded", func() bool {
		var err error
		if old, err = h.store.Get(imgs[0].ID); err != nil {
			t.Fatal(err)
		}
		return old.State == state.Superseded
	})
	if !strings.Contains(old.LastError, fmt.Sprintf("superseded by image %d", imgs[1].ID)) {
		t.Errorf("the superseded record says %q; want superseded by image %d", old.LastError, imgs[1].ID)
	}
	counts, err := h.store.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if counts[state.Failed] != 0 {
		t.Errorf("failed count %d; want 0 once the folder landed", counts[state.Failed])
	}
	if _, err := h.pipeline(h.config()).RetryFailed(t.Context()); err != nil {
		t.Errorf("retry --failed after the fix: %v; want nothing to retry", err)
	}
}
