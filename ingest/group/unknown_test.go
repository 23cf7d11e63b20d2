package group

import (
	"os"
	"testing"
	"time"
)

func TestUnknownFilesAreCounted(t *testing.T) {
	tr := newTree(t)
	tr.write("notes.docx", []byte("not an image"))
	tr.write("a/readme.txt", []byte("neither"))
	tr.write("ct.mha", []byte("ObjectType = Image\nNDims = 2\nDimSize = 1 1\nElementType = MET_UCHAR\nElementDataFile = LOCAL\nx"))
	g := NewGrouper(tr.watch("auto"), nil)
	tr.scan(g, t0)
	tr.scan(g, t0.Add(testSettle))
	g.Ready(t0.Add(testSettle))
	if got := g.Unknown(); got != 2 {
		t.Errorf("Unknown() = %d after the first look, want 2", got)
	}
	g.Ready(t0.Add(testSettle + time.Minute))
	if got := g.Unknown(); got != 2 {
		t.Errorf("Unknown() = %d after another look, want 2 (each file once)", got)
	}
	if err := os.Remove(tr.abs("notes.docx")); err != nil {
		t.Fatal(err)
	}
	tr.scan(g, t0.Add(testSettle+2*time.Minute))
	g.Ready(t0.Add(testSettle + 2*time.Minute))
	if got := g.Unknown(); got != 1 {
		t.Errorf("Unknown() = %d after one was removed, want 1", got)
	}
}

// A file seen once (one file-system event, no rescan yet) is reported as
// of no known type as soon as its settle time has passed, not at the next
// full rescan, a minute or more later: a short file whose type its first
// bytes cannot tell is looked at a second time by the grouper itself.
func TestUnknownFileSeenOnceIsReportedAfterSettle(t *testing.T) {
	tr := newTree(t)
	tr.write("notes.docx", []byte("not an image"))
	tr.write("x/README", []byte("short"))
	g := NewGrouper(tr.watch("auto"), nil)
	tr.observe(g, "notes.docx", t0)
	tr.observe(g, "x/README", t0)
	g.Ready(t0)
	if w := g.NextWake(); w.IsZero() || w.After(t0.Add(testSettle)) {
		t.Fatalf("next wake %v; want by the settle time %v", w, t0.Add(testSettle))
	}
	g.Ready(t0.Add(testSettle))
	if got := g.Unknown(); got != 2 {
		t.Errorf("Unknown() = %d at the settle time after one event each, want 2", got)
	}
}
