package group

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/watch"
)

// TestPlan: a dry run over a folder shows settled images as ready, fresh ones
// and incomplete ones as waiting with the reason, and unknown files as
// ignored, in a table a user can read.
func TestPlan(t *testing.T) {
	tr := newTree(t)
	old := time.Now().Add(-time.Hour)
	for rel, data := range map[string][]byte{
		"old.mha":       []byte("x"),
		"ct.mhd":        mhdText("2 2 1", "MET_UCHAR", "ct.raw", ""),
		"s/IM0001":      dcmA(1),
		"s/IM0002":      dcmA(2),
		"notes.txt":     []byte(strings.Repeat("n", 200)),
		".hidden/x.mha": []byte("x"),
	} {
		tr.write(rel, data)
		if err := os.Chtimes(tr.abs(rel), old, old); err != nil {
			t.Fatal(err)
		}
	}
	tr.write("fresh.nii", []byte("x")) // mtime now: not settled
	w := tr.watch("auto")
	w.Settle = time.Minute
	rep, err := Plan(context.Background(), w, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string]string)
	for _, e := range rep.Entries {
		got[e.Key] = e.State + " " + e.Reason
	}
	key := "dicom:s/" + studyA + "/" + seriesA + "/" + testCTClass
	want := map[string]string{
		"old.mha":   "ready ",
		key:         "ready ",
		"ct.mhd":    "waiting waiting for data file ct.raw",
		"fresh.nii": "waiting settling: 1m0s left",
		"notes.txt": "ignored unknown file type",
	}
	for k, v := range want {
		if !strings.HasPrefix(got[k], strings.TrimSuffix(v, " 1m0s left")) {
			t.Errorf("entry %q = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("entries = %q, want the keys of %q", got, want)
	}
	var sb strings.Builder
	if err := rep.WriteText(&sb); err != nil {
		t.Fatal(err)
	}
	text := sb.String()
	for _, s := range []string{"2 ready, 2 waiting, 1 ignored", "STATE", "waiting for data file ct.raw", "DICOM s: CT, 2 files", "dicom"} {
		if !strings.Contains(text, s) {
			t.Errorf("plan text lacks %q:\n%s", s, text)
		}
	}
	if strings.Contains(text, key) {
		t.Errorf("plan text shows the UID key %q instead of a label:\n%s", key, text)
	}
}

func TestPlanMissingFolder(t *testing.T) {
	_, err := Plan(context.Background(), watch.Spec{Path: t.TempDir() + "/gone", Settle: time.Second}, nil)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Plan of a missing folder: err = %v, want a not-exist error", err)
	}
}
