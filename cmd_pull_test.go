package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

func TestPullCommandErrors(t *testing.T) {
	f := newFixture(t, "t", "")
	env := map[string]string{"GRAND_CHALLENGE_TOKEN": "t"}
	t.Run("wrong slug fails before any summary", func(t *testing.T) {
		r := runCLI(t, env, "pull", "--config", f.cfg, "--archive", "no-such-archive", "--out", t.TempDir())
		if r.code != exitError {
			t.Errorf("exit %d, want %d", r.code, exitError)
		}
		if strings.Contains(r.stdout, "items") {
			t.Errorf("printed a summary for an archive it never found: %q", r.stdout)
		}
		if !strings.Contains(r.stderr, `"no-such-archive"`) {
			t.Errorf("stderr %q does not name the slug", r.stderr)
		}
	})
	t.Run("empty archive prints its summary", func(t *testing.T) {
		r := runCLI(t, env, "pull", "--config", f.cfg, "--archive", "my-archive", "--out", t.TempDir())
		if r.code != exitOK || !strings.Contains(r.stdout, "0 items: 0 files downloaded (0 B)") {
			t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})
}

// TestPullDICOMImageSetCLI pulls an archive item holding a DICOM image set
// through the command: one file per stored instance, in a folder named
// after the interface, byte for byte what the server stored, and readable
// by dcmtk's dcmdump.
func TestPullDICOMImageSetCLI(t *testing.T) {
	f := newFixture(t, "t", "")
	f.srv.AddInterface("ct-series", "DICOM Image Set")
	item := f.srv.AddItem("my-archive", "case 1")
	files := gcapitest.SampleDICOMSeries(3)
	files["IM000004.dcm"] = gcapitest.SampleDICOMFrames(4, 2, 4, gcapitest.SampleStudyUID, gcapitest.SampleSeriesUID)
	pk, err := f.srv.AddDICOMImageSetValue(item.PK, "ct-series", "series 1", files)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	r := runCLI(t, map[string]string{"GRAND_CHALLENGE_TOKEN": "t"}, "pull", "--config", f.cfg, "--archive", "my-archive", "--out", out)
	if r.code != exitOK || !strings.Contains(r.stdout, "1 items: 4 files downloaded") {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	stored, err := f.srv.DICOMInstances(pk)
	if err != nil {
		t.Fatal(err)
	}
	dcmdump, err := exec.LookPath("dcmdump")
	if err != nil && os.Getenv("CI") == "true" {
		t.Fatalf("dcmdump (dcmtk) is needed on CI: %v", err)
	}
	for _, in := range stored {
		p := filepath.Join(out, "case 1", "ct-series", in.SOPInstanceUID+".dcm")
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, in.Content) {
			t.Errorf("%s: %d bytes differ from the %d the server stored", p, len(got), len(in.Content))
		}
		if dcmdump == "" {
			continue
		}
		if b, err := exec.Command(dcmdump, "-q", p).CombinedOutput(); err != nil {
			t.Errorf("dcmdump %s: %v\n%s", p, err, b)
		}
	}
	if dcmdump == "" {
		t.Skip("dcmdump (dcmtk) not installed: the pulled instances were compared but not read with it")
	}
}
