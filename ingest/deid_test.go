package ingest

import (
	"archive/zip"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gcingest/gcingest/dicom"
	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/ingest/group"
	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/watch"
)

const (
	ctClass = "1.2.840.10008.5.1.4.1.1.2"
	mrClass = "1.2.840.10008.5.1.4.1.1.4"
)

// Identifying values the test DICOM holds; none may leave the machine.
var identifying = []string{
	"DOE^JOHN", "PID-4711-0815", "19610203", "20240506", "St Example Hospital",
	"SECRET-PRIVATE-VALUE", "NESTED^NAME", "Dr^Referrer",
}

// dcmEl is one element of a test file (explicit VR little endian).
type dcmEl struct {
	group, elem uint16
	vr          string
	val         []byte
	items       [][]dcmEl // SQ
}

func dcmStr(g, e uint16, vr, v string) dcmEl {
	b := []byte(v)
	if len(b)%2 == 1 {
		if vr == "UI" {
			b = append(b, 0)
		} else {
			b = append(b, ' ')
		}
	}
	return dcmEl{group: g, elem: e, vr: vr, val: b}
}

func encodeEl(b []byte, e dcmEl) []byte {
	le := binary.LittleEndian
	b = le.AppendUint16(b, e.group)
	b = le.AppendUint16(b, e.elem)
	b = append(b, e.vr...)
	val := e.val
	if e.vr == "SQ" {
		val = nil
		for _, it := range e.items {
			var ib []byte
			for _, c := range it {
				ib = encodeEl(ib, c)
			}
			val = le.AppendUint16(val, 0xFFFE)
			val = le.AppendUint16(val, 0xE000)
			val = le.AppendUint32(val, uint32(len(ib)))
			val = append(val, ib...)
		}
	}
	switch e.vr {
	case "OB", "OW", "SQ", "UN", "UT":
		b = append(b, 0, 0)
		b = le.AppendUint32(b, uint32(len(val)))
	default:
		b = le.AppendUint16(b, uint16(len(val)))
	}
	return append(b, val...)
}

// ctSpec is a test CT slice.
type ctSpec struct {
	class, study, series, instance string
	burnedIn                       bool
	stackID                        string
}

// bytes is a Part-10 file holding every value of identifying, a private
// element and a nested sequence, with tags in ascending order.
func (s ctSpec) bytes() []byte {
	if s.class == "" {
		s.class = ctClass
	}
	b := make([]byte, 128)
	b = append(b, "DICM"...)
	var meta []byte
	for _, e := range []dcmEl{
		{group: 2, elem: 1, vr: "OB", val: []byte{0, 1}},
		dcmStr(2, 2, "UI", s.class), dcmStr(2, 3, "UI", s.instance),
		dcmStr(2, 0x10, "UI", "1.2.840.10008.1.2.1"), dcmStr(2, 0x12, "UI", "1.2.3.4"),
	} {
		meta = encodeEl(meta, e)
	}
	b = encodeEl(b, dcmEl{group: 2, elem: 0, vr: "UL", val: binary.LittleEndian.AppendUint32(nil, uint32(len(meta)))})
	b = append(b, meta...)
	ds := []dcmEl{
		dcmStr(8, 0x16, "UI", s.class), dcmStr(8, 0x18, "UI", s.instance),
		dcmStr(8, 0x20, "DA", "20240506"), dcmStr(8, 0x60, "CS", "CT"),
		dcmStr(8, 0x80, "LO", "St Example Hospital"), dcmStr(8, 0x90, "PN", "Dr^Referrer"),
		dcmStr(9, 0x10, "LO", "ACME"), dcmStr(9, 0x1001, "LO", "SECRET-PRIVATE-VALUE"),
		dcmStr(0x10, 0x10, "PN", "DOE^JOHN"), dcmStr(0x10, 0x20, "LO", "PID-4711-0815"),
		dcmStr(0x10, 0x30, "DA", "19610203"),
		dcmStr(0x20, 0x0D, "UI", s.study), dcmStr(0x20, 0x0E, "UI", s.series),
		dcmStr(0x20, 0x13, "IS", s.instance[strings.LastIndexByte(s.instance, '.')+1:]),
	}
	if s.stackID != "" {
		ds = append(ds, dcmStr(0x20, 0x9056, "SH", s.stackID))
	}
	ds = append(ds,
		dcmStr(0x28, 0x10, "US", "\x02\x00"), dcmStr(0x28, 0x11, "US", "\x02\x00"),
	)
	if s.burnedIn {
		ds = append(ds, dcmStr(0x28, 0x301, "CS", "YES"))
	}
	ds = append(ds,
		// A sequence the procedure keeps, its item cleaned by the same rules.
		dcmEl{group: 0x40, elem: 0xA043, vr: "SQ", items: [][]dcmEl{{
			dcmStr(8, 0x100, "SH", "CODE1"), dcmStr(0x10, 0x10, "PN", "NESTED^NAME"),
		}}},
		dcmEl{group: 0x7FE0, elem: 0x10, vr: "OW", val: []byte{1, 2, 3, 4, 5, 6, 7, 8}},
	)
	for _, e := range ds {
		b = encodeEl(b, e)
	}
	return b
}

// recorder keeps the body of every request the client sends.
type recorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	sent [][]byte // in order
	puts [][]byte // part uploads
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	r.mu.Lock()
	r.sent = append(r.sent, []byte(req.URL.String()), body)
	if req.Method == http.MethodPut {
		r.puts = append(r.puts, body)
	}
	r.mu.Unlock()
	return r.next.RoundTrip(req)
}

// deidHarness is a harness whose client records every byte it sends.
func deidHarness(t *testing.T, ifaceKind string) (*harness, *recorder) {
	t.Helper()
	h := newHarness(t, gcapitest.Options{}, "keep")
	rec := &recorder{next: h.srv.Client().Transport}
	api, err := gcapi.New(h.srv.URL, h.srv.Token(), gcapi.WithHTTPClient(&http.Client{Transport: rec}),
		gcapi.WithRetry(gcapi.RetryPolicy{MaxAttempts: 4, BaseDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	h.api = api
	if ifaceKind != "" {
		h.srv.AddInterface("dicom-set", ifaceKind)
		h.watch.Interface = "dicom-set"
	}
	return h, rec
}

// runPlanned submits what the drop folder holds ready (want groups, as
// submitPlanned), runs a pipeline until settled records number settled,
// stops it and returns the records.
func runPlanned(t *testing.T, h *harness, want, settled int) []state.Image {
	t.Helper()
	p := h.pipeline(h.config())
	if n := submitPlanned(t, h, p); n != want {
		t.Fatalf("submitted %d groups; want %d", n, want)
	}
	stop := start(p)
	imgs := h.waitSettled(settled)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	return imgs
}

// submitPlanned groups the drop folder as the agent would (settle times of
// zero: every file is settled) and submits every ready group.
func submitPlanned(t *testing.T, h *harness, p *Pipeline) int {
	t.Helper()
	rep, err := group.Plan(context.Background(), h.watch.Spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range rep.Entries {
		if e.State != group.PlanReady {
			t.Fatalf("plan entry %s %s: %s", e.State, e.Key, e.Reason)
		}
		if err := p.Submit(context.Background(), Group{Watch: h.watch.Path, Key: e.Key, Kind: e.Kind, Files: e.Files, Label: e.Label}); err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n
}

func TestDeidentifiedDICOMLeavesNoIdentity(t *testing.T) {
	h, rec := deidHarness(t, "")
	h.watch.Deidentify = true
	const study, series = "1.2.826.0.1.555.1", "1.2.826.0.1.555.1.2"
	var instances []string
	for i := 1; i <= 3; i++ {
		inst := series + "." + string(rune('0'+i))
		instances = append(instances, inst)
		// Exports often name files after the patient.
		h.write("ct/DOE_JOHN_IM"+string(rune('0'+i)), ctSpec{study: study, series: series, instance: inst}.bytes())
	}
	imgs := runPlanned(t, h, 1, 1)
	if imgs[0].State != state.Finished {
		t.Fatalf("image %s: %s", imgs[0].State, imgs[0].LastError)
	}
	h.checkArchive(1)
	// The title's hash is keyed: anyone holding the original UIDs can
	// compute an unkeyed hash of the series key, and so find the item.
	if items := h.srv.Items(testArchive); len(items) != 1 || items[0].Title != imgs[0].Title {
		t.Fatalf("archive items %+v; want one titled %q", items, imgs[0].Title)
	}
	if unkeyed := seriesTitleHash(imgs[0].Key, nil); strings.Contains(imgs[0].Title, unkeyed) {
		t.Errorf("title %q holds %s, the unkeyed hash of the original UIDs", imgs[0].Title, unkeyed)
	}

	rec.mu.Lock()
	all := bytes.Join(rec.sent, nil)
	puts := bytes.Join(rec.puts, nil)
	rec.mu.Unlock()
	if len(puts) == 0 {
		t.Fatal("no upload bytes recorded")
	}
	for _, s := range append(slices.Clone(identifying), study, series, instances[0], instances[1], instances[2], "DOE_JOHN") {
		if bytes.Contains(all, []byte(s)) {
			t.Errorf("the server received %q", s)
		}
	}
	// The ZIP sent: every file de-identified, new UIDs, one study and
	// series across them, each instance its own.
	zr, err := zip.NewReader(bytes.NewReader(puts), int64(len(puts)))
	if err != nil {
		t.Fatalf("uploaded bytes are not one ZIP: %v", err)
	}
	if len(zr.File) != 3 {
		t.Fatalf("ZIP holds %d files; want 3", len(zr.File))
	}
	studies, seriesUIDs, sops := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, zf := range zr.File {
		rc, err := zf.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		hd, err := dicom.Verify(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", zf.Name, err)
		}
		dcmdumpReads(t, zf.Name, b)
		studies[hd.StudyInstanceUID], seriesUIDs[hd.SeriesInstanceUID] = true, true
		sops[hd.InstanceNumber+hd.SOPClassUID] = true
		if !strings.HasPrefix(hd.StudyInstanceUID, "2.25.") || !strings.HasPrefix(hd.SeriesInstanceUID, "2.25.") {
			t.Errorf("%s: study %s, series %s; want new 2.25 UIDs", zf.Name, hd.StudyInstanceUID, hd.SeriesInstanceUID)
		}
	}
	if len(studies) != 1 || len(seriesUIDs) != 1 || len(sops) != 3 {
		t.Errorf("got %d studies, %d series, %d instances; want 1, 1, 3", len(studies), len(seriesUIDs), len(sops))
	}
	// The secret is its own file, beside the state file, private.
	fi, err := os.Stat(filepath.Join(filepath.Dir(h.statePath), SecretFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("secret mode %v; want 0600", fi.Mode().Perm())
	}
}

func TestDeidentifyRefuses(t *testing.T) {
	const study, series = "1.2.826.0.1.556.1", "1.2.826.0.1.556.1.2"
	tests := []struct {
		name  string
		files map[string][]byte
		want  []string // in the failed image's reason
	}{
		{
			name:  "burned-in annotation",
			files: map[string][]byte{"b/IM1": ctSpec{study: study, series: series, instance: series + ".1", burnedIn: true}.bytes()},
			want:  []string{"IM1", "burned"},
		},
		{
			name:  "a SOP class the procedure has no rules for",
			files: map[string][]byte{"m/IM1": ctSpec{class: mrClass, study: study, series: series, instance: series + ".1"}.bytes()},
			want:  []string{"IM1", "Unsupported SOP Class"},
		},
		{
			name: "a 4D set",
			files: map[string][]byte{
				"4d/a": ctSpec{study: study, series: series, instance: series + ".1", stackID: "1"}.bytes(),
				"4d/b": ctSpec{study: study, series: series + "9", instance: series + "9.1", stackID: "1"}.bytes(),
			},
			want: []string{"4D set", "StackID", "without deidentify"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, rec := deidHarness(t, "")
			h.watch.Deidentify = true
			for rel, b := range tt.files {
				h.write(rel, b)
			}
			imgs := runPlanned(t, h, 1, 1)
			if imgs[0].State != state.Failed {
				t.Fatalf("image %s (%s); want failed", imgs[0].State, imgs[0].LastError)
			}
			for _, w := range tt.want {
				if !strings.Contains(imgs[0].LastError, w) {
					t.Errorf("reason %q lacks %q", imgs[0].LastError, w)
				}
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if len(rec.puts) != 0 {
				t.Errorf("%d part uploads sent for a refused group", len(rec.puts))
			}
		})
	}
}

// TestTruncatedDICOMFails: a cut file fails its series, named, once the
// grouper lets it go; nothing is sent.
func TestTruncatedDICOMFails(t *testing.T) {
	h, rec := deidHarness(t, "")
	const study, series = "1.2.826.0.1.557.1", "1.2.826.0.1.557.1.2"
	h.write("s/IM1", ctSpec{study: study, series: series, instance: series + ".1"}.bytes())
	full := ctSpec{study: study, series: series, instance: series + ".2"}.bytes()
	h.write("s/IM2", full[:len(full)-5])
	imgs := runPlanned(t, h, 1, 1)
	if imgs[0].State != state.Failed || !strings.Contains(imgs[0].LastError, "IM2") || !strings.Contains(imgs[0].LastError, "truncated") {
		t.Fatalf("image %s (%s); want failed, naming IM2 as truncated", imgs[0].State, imgs[0].LastError)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.puts) != 0 {
		t.Errorf("%d part uploads sent for a cut series", len(rec.puts))
	}
}

func TestLoadSecret(t *testing.T) {
	name := filepath.Join(t.TempDir(), "d", SecretFile)
	a, err := LoadSecret(name)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadSecret(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != secretLen || !bytes.Equal(a, b) {
		t.Errorf("secret %x then %x; want the same %d bytes", a, b, secretLen)
	}
	if err := os.WriteFile(name, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSecret(name); err == nil || !strings.Contains(err.Error(), name) {
		t.Errorf("a short secret gave %v; want an error naming the file", err)
	}
}

// TestLateSliceSameItem: a slice that arrives after its series was sent
// makes the same item hold the complete series (its value replaced by an
// image of every file), never a second item; with and without
// de-identification.
func TestLateSliceSameItem(t *testing.T) {
	for _, deid := range []bool{false, true} {
		t.Run(map[bool]string{false: "as is", true: "deidentified"}[deid], func(t *testing.T) {
			h, _ := deidHarness(t, "")
			h.watch.Deidentify = deid
			const study, series = "1.2.826.0.1.558.1", "1.2.826.0.1.558.1.2"
			slice := func(i int) []byte {
				return ctSpec{study: study, series: series, instance: series + "." + string(rune('0'+i))}.bytes()
			}
			h.write("s/IM1", slice(1))
			h.write("s/IM2", slice(2))
			p := h.pipeline(h.config())
			submitPlanned(t, h, p)
			stop := start(p)
			if imgs := h.waitSettled(1); imgs[0].State != state.Finished {
				t.Fatalf("first: %s (%s)", imgs[0].State, imgs[0].LastError)
			}
			h.write("s/IM3", slice(3))
			submitPlanned(t, h, p)
			imgs := h.waitSettled(2)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if len(imgs) != 2 || imgs[1].State != state.Finished || imgs[1].Title != imgs[0].Title || imgs[1].ItemPK != imgs[0].ItemPK {
				t.Fatalf("records %+v; want a second record finished on the first one's item, same title", imgs)
			}
			if n, _ := itemSlices(t, h); n != 3 {
				t.Errorf("the item's image holds %d files; want the complete series of 3", n)
			}
		})
	}
}

// TestDICOMImageSetSocket: for a socket of kind DICOM Image Set the files
// are de-identified whatever the watch says, sent one upload each
// (dicom_image_<i>.dcm) and attached with image_name, the item's title.
func TestDICOMImageSetSocket(t *testing.T) {
	h, rec := deidHarness(t, "DICOM Image Set")
	const study, series = "1.2.826.0.1.559.1", "1.2.826.0.1.559.1.2"
	for i := 1; i <= 3; i++ {
		h.write("set/IM"+string(rune('0'+i)), ctSpec{study: study, series: series, instance: series + "." + string(rune('0'+i))}.bytes())
	}
	p := h.pipeline(h.config())
	submitPlanned(t, h, p)
	stop := start(p)
	imgs := h.waitSettled(1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if imgs[0].State != state.Finished {
		t.Fatalf("image %s (%s)", imgs[0].State, imgs[0].LastError)
	}
	// The fake deletes uploads once imported: the names are in the requests.
	rec.mu.Lock()
	sent := string(bytes.Join(rec.sent, nil))
	rec.mu.Unlock()
	for _, name := range []string{"dicom_image_0.dcm", "dicom_image_1.dcm", "dicom_image_2.dcm"} {
		if !strings.Contains(sent, `"filename":"`+name+`"`) {
			t.Errorf("no upload named %s created", name)
		}
	}
	if strings.Contains(sent, ".zip") {
		t.Errorf("a ZIP was sent to a DICOM Image Set socket")
	}
	items := h.srv.Items(testArchive)
	if len(items) != 1 {
		t.Fatalf("%d items; want 1", len(items))
	}
	v := items[0].Value("dicom-set")
	if v == nil || v.Image == nil {
		t.Fatalf("item has no DICOM image set")
	}
	var named bool
	for _, im := range h.srv.Images() {
		if im.DICOMImageSet != nil && im.Name == imgs[0].Title {
			named = true
		}
	}
	if !named {
		t.Errorf("no DICOM image set named %q on the server", imgs[0].Title)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	all := bytes.Join(rec.sent, nil)
	for _, s := range append(slices.Clone(identifying), study, series) {
		if bytes.Contains(all, []byte(s)) {
			t.Errorf("the server received %q", s)
		}
	}
}

func TestLogDeidentification(t *testing.T) {
	for _, deid := range []bool{false, true} {
		var buf bytes.Buffer
		LogDeidentification(slog.New(slog.NewTextHandler(&buf, nil)), Watch{Spec: watch.Spec{Deidentify: deid}})
		want := "DICOM headers are sent as they are"
		if deid {
			want = "de-identified here before upload"
		}
		if !strings.Contains(buf.String(), want) {
			t.Errorf("deidentify %v logged %q; want it to say %q", deid, buf.String(), want)
		}
	}
}

// TestDeidentifySymlinkSwapIsNeverSent swaps a slice of a recorded series
// for a symbolic link to a file outside the drop folder before it is
// de-identified: the link is not followed, so nothing of that file (here,
// its pixel data, which de-identification keeps) reaches the server.
func TestDeidentifySymlinkSwapIsNeverSent(t *testing.T) {
	h, rec := deidHarness(t, "")
	h.watch.Deidentify = true
	const study, series = "1.2.826.0.1.560.1", "1.2.826.0.1.560.1.2"
	spec := func(i int) ctSpec {
		return ctSpec{study: study, series: series, instance: series + "." + string(rune('0'+i))}
	}
	h.write("s/IM1", spec(1).bytes())
	h.write("s/IM2", spec(2).bytes())
	p := h.pipeline(h.config())
	if n := submitPlanned(t, h, p); n != 1 {
		t.Fatalf("submitted %d groups; want one series", n)
	}
	secret := spec(2).bytes()
	copy(secret[len(secret)-8:], "SECRETPX") // the pixel data, kept by the procedure
	outside := filepath.Join(t.TempDir(), "other-patient.dcm")
	if err := os.WriteFile(outside, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(h.watch.Path, "s", "IM2.new")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(link, filepath.Join(h.watch.Path, "s", "IM2")); err != nil {
		t.Fatal(err)
	}
	stop := start(p)
	imgs := h.waitSettled(1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	all := bytes.Join(rec.sent, nil)
	rec.mu.Unlock()
	if bytes.Contains(all, []byte("SECRETPX")) {
		t.Error("the server received the symlink target's pixel data")
	}
	if imgs[0].State != state.Failed || !strings.Contains(imgs[0].LastError, "IM2") {
		t.Errorf("image %s (%s); want failed naming IM2", imgs[0].State, imgs[0].LastError)
	}
}

// TestDeidentifyingZipDoesNotFollowSymlinks checks the spool step on its
// own, for a link swapped in after the files were hashed: writing the
// de-identified ZIP refuses the link instead of reading its target.
func TestDeidentifyingZipDoesNotFollowSymlinks(t *testing.T) {
	dir := t.TempDir()
	spec := ctSpec{study: "1.2.826.0.1.561.1", series: "1.2.826.0.1.561.1.2", instance: "1.2.826.0.1.561.1.2.1"}
	secret := spec.bytes()
	copy(secret[len(secret)-8:], "SECRETPX")
	outside := filepath.Join(dir, "other-patient.dcm")
	if err := os.WriteFile(outside, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "IM1")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	d, err := dicom.NewDeidentifier(bytes.Repeat([]byte{7}, 32), dicom.WithSeriesKey("k"))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "spool", "x.zip")
	_, err = writeDeidZip(context.Background(), d, out, []state.File{{Rel: "IM1", Path: link}})
	if err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("writeDeidZip over a symlink: %v; want it refused as a symbolic link", err)
	}
	if b, err := os.ReadFile(out); err == nil && bytes.Contains(b, []byte("SECRETPX")) {
		t.Error("the spooled ZIP holds the symlink target's pixel data")
	}
}

// After the upgrade that keyed DICOM groups by series (dicom:<uids>), a
// series still in a keep-mode drop folder that the old key (its folder)
// sent as one item is found held by that item: a duplicate, nothing sent.
func TestDICOMKeyChangeDoesNotResendKeptSeries(t *testing.T) {
	h, _ := deidHarness(t, "")
	const study, series = "1.2.826.0.1.777.1", "1.2.826.0.1.777.1.2"
	var files []File
	for i := 1; i <= 3; i++ {
		files = append(files, h.write(fmt.Sprintf("ct/IM%d", i), ctSpec{study: study, series: series, instance: fmt.Sprintf("%s.%d", series, i)}.bytes()))
	}
	old := h.runAll(h.group(KindZip, "ct", files...)) // the key before the upgrade: the folder
	if old[0].State != state.Finished {
		t.Fatalf("the series under its old key is %s (%s)", old[0].State, old[0].LastError)
	}
	before := len(h.srv.Requests())
	imgs := runPlanned(t, h, 1, 2)
	if !group.IsDICOMKey(imgs[1].Key) || imgs[1].State != state.Duplicate || imgs[1].ItemPK != old[0].ItemPK {
		t.Errorf("the series under its new key %q is %s in item %s (%s); want a duplicate held by item %s",
			imgs[1].Key, imgs[1].State, imgs[1].ItemPK, imgs[1].LastError, old[0].ItemPK)
	}
	for _, r := range h.srv.Requests()[before:] {
		if r.Method == "POST" || r.Method == "PUT" || r.Method == "PATCH" {
			t.Errorf("%s %s after the key change; want nothing sent", r.Method, r.Path)
		}
	}
	h.checkArchive(1)
}

// TestDeidentifiedNamesStayHome: exports name folders and files after the
// patient; with deidentify, neither the title, the image_name, nor any
// upload filename or byte the server receives carries them.
func TestDeidentifiedNamesStayHome(t *testing.T) {
	for _, kind := range []string{"", KindDICOMImageSet} {
		t.Run(cmp.Or(kind, "image socket"), func(t *testing.T) {
			h, rec := deidHarness(t, kind)
			h.watch.Deidentify = kind == ""
			const study, series = "1.2.826.0.1.558.1", "1.2.826.0.1.558.1.2"
			for i := 1; i <= 2; i++ {
				inst := fmt.Sprintf("%s.%d", series, i)
				h.write(fmt.Sprintf("DOE^JOHN PID-Q4711Z/DOE^JOHN_%d.dcm", i), ctSpec{study: study, series: series, instance: inst}.bytes())
			}
			imgs := runPlanned(t, h, 1, 1)
			if imgs[0].State != state.Finished {
				t.Fatalf("image %s: %s", imgs[0].State, imgs[0].LastError)
			}
			secret, err := LoadSecret(h.config().SecretPath())
			if err != nil {
				t.Fatal(err)
			}
			if want := seriesTitleHash(imgs[0].Key, secret); imgs[0].Title != want {
				t.Errorf("title %q; want the keyed hash %q alone", imgs[0].Title, want)
			}
			rec.mu.Lock()
			all := bytes.Join(rec.sent, nil)
			rec.mu.Unlock()
			// The ID's digits between letters: a bare "4711" turns up by
			// chance among the digits of the UIDs the server makes.
			for _, s := range []string{"DOE", "JOHN", "PID-Q4711Z", "Q4711Z"} {
				if bytes.Contains(all, []byte(s)) {
					t.Errorf("the server received %q (in a title, image_name, filename or file)", s)
				}
			}
		})
	}
}

// TestDeidentifyNeverSendsUnreadableDICOMRaw: a file that claims to be
// DICOM but that the reader cannot follow is made an image of its own by
// the grouper; with deidentify it fails, naming the file, and no byte of
// it leaves.
func TestDeidentifyNeverSendsUnreadableDICOMRaw(t *testing.T) {
	h, rec := deidHarness(t, "")
	h.watch.Deidentify = true
	const study, series = "1.2.826.0.1.559.1", "1.2.826.0.1.559.1.2"
	b := ctSpec{study: study, series: series, instance: series + ".1"}.bytes()
	// StudyDate's VR made into bytes that are no VR: a structure the
	// reader refuses, before the UIDs.
	i := bytes.Index(b, []byte{0x08, 0x00, 0x20, 0x00, 'D', 'A'})
	if i < 0 {
		t.Fatal("no StudyDate in the test file")
	}
	b[i+4], b[i+5] = 0x01, 0x02
	h.write("x/IM1", b)
	imgs := runPlanned(t, h, 1, 1)
	if imgs[0].State != state.Failed || !strings.Contains(imgs[0].LastError, "IM1") || !strings.Contains(imgs[0].LastError, "deidentify") {
		t.Fatalf("image %s (%s); want failed, naming IM1 and deidentify", imgs[0].State, imgs[0].LastError)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.puts) != 0 {
		t.Errorf("%d part uploads sent for an unreadable DICOM file", len(rec.puts))
	}
	if all := bytes.Join(rec.sent, nil); bytes.Contains(all, []byte("DOE^JOHN")) {
		t.Error("the patient's name reached the server")
	}
}

// dcmdumpReads has dcmtk's dcmdump, a reader no one here wrote, read a
// de-identified file as the server's would: whole, with no error or
// warning. Missing dcmdump fails under CI=true (.ci/run installs dcmtk).
func dcmdumpReads(t *testing.T, name string, b []byte) {
	t.Helper()
	dcmdump, err := exec.LookPath("dcmdump")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("dcmdump not installed (Debian: dcmtk); CI checks the de-identified files with it")
		}
		t.Logf("dcmdump not installed: %s not checked by it here", name)
		return
	}
	path := filepath.Join(t.TempDir(), "out.dcm")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(dcmdump, "+E", path).CombinedOutput()
	if err != nil {
		t.Errorf("dcmdump +E %s: %v\n%s", name, err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "E:") || strings.HasPrefix(l, "W:") || strings.HasPrefix(l, "F:") {
			t.Errorf("dcmdump of %s as sent: %s", name, l)
		}
	}
}

// nestedSeq is ContentSequence (0040,A730) of undefined length, nested
// depth deep, an item of undefined length at each level and PatientName at
// the bottom; closed: with every item and sequence delimiter.
func nestedSeq(depth int, closed bool) []byte {
	le := binary.LittleEndian
	var b []byte
	for range depth {
		b = le.AppendUint16(b, 0x0040)
		b = le.AppendUint16(b, 0xA730)
		b = append(b, "SQ\x00\x00"...)
		b = le.AppendUint32(b, 0xFFFFFFFF)
		b = append(b, 0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF) // item, undefined length
	}
	b = encodeEl(b, dcmStr(0x10, 0x10, "PN", "NESTED^NAME"))
	if !closed {
		return b
	}
	for range depth {
		b = append(b, 0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0) // item delimiter
		b = append(b, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0) // sequence delimiter
	}
	return b
}

// TestDeepOrUnclosedSequencesSendNoIdentity: a legal series with one
// sequence nested 40 deep, and one whose sequence is never closed, under
// deidentify: each lands de-identified or fails, and no byte of identity
// reaches the server either way.
func TestDeepOrUnclosedSequencesSendNoIdentity(t *testing.T) {
	for _, closed := range []bool{true, false} {
		t.Run(map[bool]string{true: "40 deep", false: "unclosed"}[closed], func(t *testing.T) {
			h, rec := deidHarness(t, "")
			h.watch.Deidentify = true
			const study, series = "1.2.826.0.1.563.1", "1.2.826.0.1.563.1.2"
			for i := 1; i <= 3; i++ {
				b := ctSpec{study: study, series: series, instance: fmt.Sprintf("%s.%d", series, i)}.bytes()
				// ContentSequence goes after (0040,A043) and before the
				// pixel data, in tag order; never closed, it swallows the
				// pixel data and the file ends inside it.
				px := bytes.Index(b, []byte{0xE0, 0x7F, 0x10, 0x00})
				b = append(b[:px:px], append(nestedSeq(40, closed), b[px:]...)...)
				h.write(fmt.Sprintf("s/IM%d", i), b)
			}
			p := h.pipeline(h.config())
			stop := start(p)
			rep, err := group.Plan(t.Context(), h.watch.Spec, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range rep.Entries {
				if err := p.Submit(t.Context(), Group{Watch: h.watch.Path, Key: e.Key, Kind: e.Kind, Files: e.Files, Label: e.Label}); err != nil {
					t.Fatal(err)
				}
			}
			imgs := h.waitSettled(len(rep.Entries))
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			for _, img := range imgs {
				if img.State != state.Finished && img.State != state.Failed {
					t.Errorf("image %d (%s): %s; want finished or failed", img.ID, img.Key, img.State)
				}
				if closed && img.State != state.Finished {
					t.Errorf("a legal 40-deep series: %s (%s); want it de-identified and landed", img.State, img.LastError)
				}
			}
			rec.mu.Lock()
			all := bytes.Join(rec.sent, nil)
			rec.mu.Unlock()
			for _, s := range append(slices.Clone(identifying), study, series) {
				if bytes.Contains(all, []byte(s)) {
					t.Errorf("the server received %q", s)
				}
			}
		})
	}
}
