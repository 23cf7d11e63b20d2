package ingest

import (
	"archive/zip"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gcingest/gcingest/state"
)

func TestWriteZipIsDeterministic(t *testing.T) {
	dir := t.TempDir()
	var files []state.File
	for _, rel := range []string{"s/b.dcm", "s/a.dcm", "s/sub/c.dcm"} {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("data of "+rel), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, state.File{Rel: rel, Path: p})
	}
	one := filepath.Join(dir, "one.zip")
	if _, err := writeZip(context.Background(), one, files); err != nil {
		t.Fatal(err)
	}
	// Touch the sources and list them in another order: same bytes.
	later := time.Now().Add(time.Hour)
	for _, f := range files {
		os.Chtimes(f.Path, later, later)
	}
	two := filepath.Join(dir, "two.zip")
	size, err := writeZip(context.Background(), two, []state.File{files[2], files[0], files[1]})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(one)
	b, _ := os.ReadFile(two)
	if !bytes.Equal(a, b) || int64(len(b)) != size {
		t.Fatalf("two ZIPs of the same files differ (%d vs %d bytes, size reported %d)", len(a), len(b), size)
	}
	zr, err := zip.NewReader(bytes.NewReader(a), int64(len(a)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	want := []string{"a.dcm", "b.dcm", "sub/c.dcm"}
	if len(names) != len(want) || names[0] != want[0] || names[1] != want[1] || names[2] != want[2] {
		t.Errorf("entries = %q; want %q (sorted, relative to the common folder)", names, want)
	}
}
