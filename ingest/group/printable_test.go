package group

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/printable/printabletest"
)

// Plan's table shows files named to attack the terminal escaped: real
// files with those names, ready and ignored.
func TestPlanEscapesNames(t *testing.T) {
	tr := newTree(t)
	if err := printabletest.TryNames(tr.root); err != nil {
		t.Skipf("this file system refuses the names: %v", err)
	}
	old := time.Now().Add(-time.Hour)
	for _, n := range printabletest.Names {
		for _, rel := range []string{n, n + ".txt"} {
			tr.write(rel, []byte("x"))
			if err := os.Chtimes(tr.abs(rel), old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	rep, err := Plan(context.Background(), tr.watch("auto"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Whether a one-byte .mha is ready or waits does not matter here: it
	// has its line either way.
	if ready, waiting, ignored := rep.Counts(); ready+waiting != len(printabletest.Names) || ignored != len(printabletest.Names) {
		t.Fatalf("%d ready, %d waiting, %d ignored; want %d images and %d ignored", ready, waiting, ignored, len(printabletest.Names), len(printabletest.Names))
	}
	var sb strings.Builder
	if err := rep.WriteText(&sb); err != nil {
		t.Fatal(err)
	}
	out := sb.String()
	if raw := printabletest.Raw(out); raw != "" {
		t.Errorf("plan holds %s:\n%q", raw, out)
	}
	for _, e := range printabletest.Escaped {
		if !strings.Contains(out, " "+e+"  ") || !strings.Contains(out, " "+e+".txt  ") {
			t.Errorf("plan lacks %s and %s.txt:\n%s", e, e, out)
		}
	}
	if got, want := strings.Count(out, "\n"), 2+2*len(printabletest.Names); got != want {
		t.Errorf("plan has %d lines, want %d: the heading, the columns, one per file:\n%s", got, want, out)
	}
}

// A failure note beside a file is read with cat or an editor: its text
// shows the name and the reason escaped, while it is written beside the
// file under the file's own name.
func TestFailureNotesEscapeNames(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for i, n := range printabletest.Names {
		reason := "cannot read /drop/" + n + ": permission denied"
		for _, note := range [][]Note{
			FailureNotes(KindSingle, n, []string{n}, 7, at, reason),
			FailureNotes(KindFolder, n, []string{n + "/ct.mha"}, 7, at, reason),
		} {
			if len(note) != 1 || note[0].Rel != n+".error.txt" {
				t.Fatalf("notes %q, want one at %q", note, n+".error.txt")
			}
			text := note[0].Text
			if raw := printabletest.Raw(text); raw != "" {
				t.Errorf("note for %q holds %s:\n%q", n, raw, text)
			}
			e := printabletest.Escaped[i]
			if (!strings.Contains(text, "upload "+e) && !strings.Contains(text, "folder "+e)) || !strings.Contains(text, "\ncannot read /drop/"+e+": permission denied\n") {
				t.Errorf("note for %q does not name %s and give the reason:\n%s", n, e, text)
			}
			if got := strings.Count(text, "\n"); got != 2 {
				t.Errorf("note for %q has %d lines, want 2 (what failed, why):\n%s", n, got, text)
			}
		}
	}
}
