package group

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestChunkedWriteReadyAfterLastWritePlusSettle: a file written in chunks
// over several seconds is ready only once its last write is Settle old.
func TestChunkedWriteReadyAfterLastWritePlusSettle(t *testing.T) {
	tr := newTree(t)
	g := NewGrouper(tr.watch("auto"), nil)
	chunk := make([]byte, 1000)
	for i := 0; i < 5; i++ {
		now := t0.Add(time.Duration(i) * 3 * time.Second)
		tr.appendTo("ct.mha", chunk)
		tr.observe(g, "ct.mha", now)
		if got := g.Ready(now); len(got) != 0 {
			t.Fatalf("ready while still being written at +%v: %v", now.Sub(t0), describe(got))
		}
	}
	last := t0.Add(12 * time.Second)
	for _, now := range []time.Time{last.Add(time.Second), last.Add(testSettle - time.Second)} {
		tr.scan(g, now)
		if got := g.Ready(now); len(got) != 0 {
			t.Fatalf("ready %v after the last write: %v", now.Sub(last), describe(got))
		}
		w := describeWaiting(g.Waiting(now))
		if !strings.HasPrefix(w["ct.mha"], "settling: ") {
			t.Errorf("waiting reason %q, want settling", w["ct.mha"])
		}
	}
	if wake, want := g.NextWake(), last.Add(testSettle); !wake.Equal(want) {
		t.Errorf("NextWake = %v, want %v", wake, want)
	}
	got := g.Ready(last.Add(testSettle))
	if want := []string{"ct.mha single ct.mha"}; !slices.Equal(describe(got), want) {
		t.Fatalf("ready at last write + settle: %q, want %q", describe(got), want)
	}
	if got[0].Files[0].Size != 5000 || got[0].Files[0].Path != tr.abs("ct.mha") {
		t.Errorf("file = %+v, want 5000 bytes at %s", got[0].Files[0], tr.abs("ct.mha"))
	}
}

// TestSeenOnceIsLookedAtAgain: a file notified once and then left alone is
// ready after Settle (the grouper looks again itself), but not if it changed
// meanwhile without a notice.
func TestSeenOnceIsLookedAtAgain(t *testing.T) {
	tr := newTree(t)
	g := NewGrouper(tr.watch("auto"), nil)
	tr.write("a.mha", []byte("aaaa"))
	tr.write("b.mha", []byte("bbbb"))
	tr.observe(g, "a.mha", t0)
	tr.observe(g, "b.mha", t0)
	tr.appendTo("b.mha", []byte("more")) // no notice for this write
	got := describe(g.Ready(t0.Add(testSettle)))
	if want := []string{"a.mha single a.mha"}; !slices.Equal(got, want) {
		t.Fatalf("ready = %q, want %q", got, want)
	}
	if got := g.Ready(t0.Add(testSettle + time.Second)); len(got) != 0 {
		t.Fatalf("b.mha ready right after its unnoticed change: %v", describe(got))
	}
	got = describe(g.Ready(t0.Add(2 * testSettle)))
	if want := []string{"b.mha single b.mha"}; !slices.Equal(got, want) {
		t.Fatalf("ready = %q, want %q", got, want)
	}
}

// TestDICOMSeriesCopiedSliceBySlice: a series copied one slice at a time,
// each slice in chunks, comes out as one image with every slice.
func TestDICOMSeriesCopiedSliceBySlice(t *testing.T) {
	tr := newTree(t)
	g := NewGrouper(tr.watch("auto"), nil)
	now := t0
	var returned [][]string
	tick := func() {
		tr.scan(g, now)
		for _, gr := range g.Ready(now) {
			returned = append(returned, describe([]Group{gr}))
		}
		now = now.Add(time.Second)
	}
	const slices = 5
	for i := 1; i <= slices; i++ {
		data := dcmA(i)
		name := "CT/IM000" + string(rune('0'+i))
		// 100 bytes (too short to tell), then the header, then the rest,
		// 3 s apart; then 9 s until the next slice starts, so the slices
		// before have settled while the next one is not identified yet.
		for _, step := range []struct{ cut, ticks int }{{100, 3}, {300, 3}, {len(data), 9}} {
			if step.cut == 100 {
				tr.write(name, data[:step.cut])
			} else {
				tr.appendTo(name, data[len(tr.read(name)):step.cut])
			}
			for range step.ticks {
				tick()
			}
		}
	}
	for i := 0; i < int(testSettle/time.Second)+1; i++ {
		tick()
	}
	key := "dicom:CT/" + studyA + "/" + seriesA + "/" + testCTClass
	want := [][]string{{key + " zip CT/IM0001,CT/IM0002,CT/IM0003,CT/IM0004,CT/IM0005"}}
	if len(returned) != 1 || returned[0][0] != want[0][0] {
		t.Fatalf("returned %q, want %q", returned, want)
	}
}

func (tr *tree) read(rel string) []byte {
	tr.t.Helper()
	b, err := os.ReadFile(tr.abs(rel))
	if err != nil {
		tr.t.Fatal(err)
	}
	return b
}

// TestDICOMLateArrival: a slice arriving after its series was returned
// brings the same group back, every file in it (issue 12: the item then
// holds the complete series; never a second image of one slice).
func TestDICOMLateArrival(t *testing.T) {
	tr := newTree(t)
	g := NewGrouper(tr.watch("auto"), nil)
	key := "dicom:s/" + studyA + "/" + seriesA + "/" + testCTClass
	tr.write("s/IM0001", dcmA(1))
	tr.write("s/IM0002", dcmA(2))
	tr.scan(g, t0)
	tr.scan(g, t0.Add(testSettle))
	if got, want := describe(g.Ready(t0.Add(testSettle))), []string{key + " zip s/IM0001,s/IM0002"}; !slices.Equal(got, want) {
		t.Fatalf("first: %q, want %q", got, want)
	}
	tr.write("s/IM0003", dcmA(3))
	later := t0.Add(time.Minute)
	tr.scan(g, later)
	tr.scan(g, later.Add(testSettle))
	if got, want := describe(g.Ready(later.Add(testSettle))), []string{key + " zip s/IM0001,s/IM0002,s/IM0003"}; !slices.Equal(got, want) {
		t.Fatalf("late: %q, want %q", got, want)
	}
	// Once the files are moved away, nothing is returned again.
	for _, n := range []string{"s/IM0001", "s/IM0002", "s/IM0003"} {
		if err := os.Remove(tr.abs(n)); err != nil {
			t.Fatal(err)
		}
	}
	tr.scan(g, later.Add(2*testSettle))
	if got := g.Ready(later.Add(2 * testSettle)); g.Len() != 0 || len(got) != 0 {
		t.Errorf("after every file left: %d files tracked, %v returned", g.Len(), describe(got))
	}
}

// TestUnknownReportedOnce: an unknown file type is logged once, however
// often it is seen, and never becomes an image.
func TestUnknownReportedOnce(t *testing.T) {
	tr := newTree(t)
	log, logs := newTestLogger()
	g := NewGrouper(tr.watch("auto"), log)
	tr.write("notes.txt", []byte(strings.Repeat("n", 500)))
	for i := 0; i < 5; i++ {
		now := t0.Add(time.Duration(i) * testSettle)
		tr.scan(g, now)
		if got := g.Ready(now); len(got) != 0 {
			t.Fatalf("unknown file became an image: %v", describe(got))
		}
		g.Waiting(now)
	}
	if n := strings.Count(logs.String(), "notes.txt"); n != 1 {
		t.Errorf("notes.txt logged %d times, want once; log:\n%s", n, logs)
	}
}

// TestTempRenamedToRealName: a temporary name is never picked up; after the
// rename the file is an image under its real name.
func TestTempRenamedToRealName(t *testing.T) {
	tr := newTree(t)
	g := NewGrouper(tr.watch("auto"), nil)
	tr.write("up/ct.mha.part", []byte("data"))
	tr.observe(g, "up/ct.mha.part", t0)
	if g.Len() != 0 {
		t.Fatalf("temporary file tracked")
	}
	if err := os.Rename(tr.abs("up/ct.mha.part"), tr.abs("up/ct.mha")); err != nil {
		t.Fatal(err)
	}
	tr.observe(g, "up/ct.mha.part", t0.Add(time.Second))
	tr.observe(g, "up/ct.mha", t0.Add(time.Second))
	got := describe(g.Ready(t0.Add(time.Second + testSettle)))
	if want := []string{"up/ct.mha single up/ct.mha"}; !slices.Equal(got, want) {
		t.Fatalf("ready = %q, want %q", got, want)
	}
}

// TestReturnedOnlyAgainOnChange: a returned image comes back only when its
// content changes; files leaving (moved after upload) bring nothing back.
func TestReturnedOnlyAgainOnChange(t *testing.T) {
	tr := newTree(t)
	g := NewGrouper(tr.watch("auto"), nil)
	tr.write("ct.mhd", mhdText("2 2 1", "MET_UCHAR", "ct.raw", ""))
	tr.write("ct.raw", make([]byte, 4))
	tr.write("x.mha", []byte("x"))
	tr.scan(g, t0)
	tr.scan(g, t0.Add(testSettle))
	if got := g.Ready(t0.Add(testSettle)); len(got) != 2 {
		t.Fatalf("first round: %v", describe(got))
	}
	now := t0.Add(time.Minute)
	tr.scan(g, now)
	if got := g.Ready(now); len(got) != 0 {
		t.Fatalf("returned again unchanged: %v", describe(got))
	}
	// The data file is rewritten with new content: the image is new content.
	tr.write("ct.raw", []byte{1, 2, 3, 4, 5})
	if err := os.Chtimes(tr.abs("ct.raw"), now, now); err != nil {
		t.Fatal(err)
	}
	tr.scan(g, now)
	tr.scan(g, now.Add(testSettle))
	if got, want := describe(g.Ready(now.Add(testSettle))), []string{"ct.mhd mhd ct.mhd,ct.raw"}; !slices.Equal(got, want) {
		t.Fatalf("after change: %q, want %q", got, want)
	}
	// The header is moved away (after upload): nothing comes back.
	if err := os.Remove(tr.abs("ct.mhd")); err != nil {
		t.Fatal(err)
	}
	tr.observe(g, "ct.mhd", now.Add(time.Hour))
	tr.scan(g, now.Add(2*time.Hour))
	if got := g.Ready(now.Add(2 * time.Hour)); len(got) != 0 {
		t.Fatalf("returned after a file left: %v", describe(got))
	}
}

// TestGoneFilesAreForgotten: deleted files, folders and files missing from a
// full scan leave the grouper's memory.
func TestGoneFilesAreForgotten(t *testing.T) {
	tr := newTree(t)
	g := NewGrouper(tr.watch("auto"), nil)
	for _, n := range []string{"a/1.mha", "a/b/2.mha", "c/3.mha", "4.mha"} {
		tr.write(n, []byte("x"))
	}
	tr.scan(g, t0)
	if g.Len() != 4 {
		t.Fatalf("tracking %d files, want 4", g.Len())
	}
	if err := os.RemoveAll(tr.abs("a")); err != nil {
		t.Fatal(err)
	}
	g.Observe(tr.abs("a"), nil, t0) // a folder gone: one notice
	if g.Len() != 2 {
		t.Fatalf("after the folder went: %d files, want 2", g.Len())
	}
	if err := os.Remove(tr.abs("c/3.mha")); err != nil {
		t.Fatal(err)
	}
	tr.scan(g, t0.Add(time.Second)) // no notice: the scan finds it gone
	if g.Len() != 1 || len(g.dirs) != 0 {
		t.Fatalf("after a scan: %d files, %d folders remembered; want 1, 0", g.Len(), len(g.dirs))
	}
}

// TestFolderMode: each direct subfolder is one item with all its files;
// files in the root are ignored and logged once.
func TestFolderMode(t *testing.T) {
	tr := newTree(t)
	log, logs := newTestLogger()
	g := NewGrouper(tr.watch("folder"), log)
	tr.write("loose.mha", []byte("x"))
	tr.write("case1/ct.mha", []byte("x"))
	tr.write("case1/overlay/seg.mha", []byte("x"))
	tr.write("case1/values.json", []byte(`{"a":1}`))
	tr.write("case1/.DS_Store", []byte("x"))
	tr.write("case2/IM0001", dcmA(1)[:len(dcmA(1))-10]) // still arriving
	tr.write("case3/ct.mhd", mhdText("2 2 1", "MET_UCHAR", "ct.raw", ""))
	for _, now := range []time.Time{t0, t0.Add(testSettle)} {
		tr.scan(g, now)
	}
	got := describe(g.Ready(t0.Add(testSettle)))
	if want := []string{"case1 folder case1/ct.mha,case1/overlay/seg.mha,case1/values.json"}; !slices.Equal(got, want) {
		t.Fatalf("ready = %q, want %q", got, want)
	}
	w := describeWaiting(g.Waiting(t0.Add(testSettle)))
	if !strings.Contains(w["case2"], "IM0001 not complete") || !strings.Contains(w["case3"], "waiting for data file ct.raw") {
		t.Errorf("waiting = %q", w)
	}
	g.Waiting(t0.Add(time.Hour))
	if n := strings.Count(logs.String(), "loose.mha"); n != 1 {
		t.Errorf("loose.mha logged %d times, want once; log:\n%s", n, logs)
	}
}

// TestFileMode: every file is its own image, whatever it is.
func TestFileMode(t *testing.T) {
	tr := newTree(t)
	g := NewGrouper(tr.watch("file"), nil)
	tr.write("s/IM0001", dcmA(1))
	tr.write("s/IM0002", dcmA(2))
	tr.write("notes.txt", []byte("n"))
	tr.write("s/IM0003", dcmA(3)[:400])
	tr.scan(g, t0)
	tr.scan(g, t0.Add(testSettle))
	got := describe(g.Ready(t0.Add(testSettle)))
	want := []string{"notes.txt single notes.txt", "s/IM0001 single s/IM0001", "s/IM0002 single s/IM0002"}
	if !slices.Equal(got, want) {
		t.Fatalf("ready = %q, want %q", got, want)
	}
	if w := describeWaiting(g.Waiting(t0.Add(testSettle))); !strings.Contains(w["s/IM0003"], "not complete") {
		t.Errorf("waiting = %q", w)
	}
}

// TestMHDDataNeverArrives: the header waits, named in Waiting, for as long
// as its data file is missing, and goes once it arrives.
func TestMHDDataNeverArrives(t *testing.T) {
	tr := newTree(t)
	g := NewGrouper(tr.watch("auto"), nil)
	tr.write("p/ct.mhd", mhdText("4 4 4", "MET_UCHAR", "ct.raw", ""))
	for i := 0; i < 10; i++ {
		now := t0.Add(time.Duration(i) * time.Hour)
		tr.scan(g, now)
		if got := g.Ready(now); len(got) != 0 {
			t.Fatalf("ready without its data: %v", describe(got))
		}
	}
	ws := g.Waiting(t0.Add(10 * time.Hour))
	if len(ws) != 1 || ws[0].Reason != "waiting for data file ct.raw" || ws[0].Kind != KindMHD {
		t.Fatalf("waiting = %+v", ws)
	}
	tr.write("p/ct.raw", make([]byte, 64))
	now := t0.Add(11 * time.Hour)
	tr.scan(g, now)
	tr.scan(g, now.Add(testSettle))
	if got, want := describe(g.Ready(now.Add(testSettle))), []string{"p/ct.mhd mhd p/ct.mhd,p/ct.raw"}; !slices.Equal(got, want) {
		t.Fatalf("ready = %q, want %q", got, want)
	}
}
