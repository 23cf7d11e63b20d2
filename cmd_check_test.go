package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

// folderFixture is a folder-mode watch with three items ready: one good,
// one with two files for a file interface, one whose values.json gives a
// string to a Float interface. run refuses the last two.
func folderFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t, "good-token", "group = \"folder\"\nsettle = \"1s\"\n[watch.values]\n\"*.pdf\" = \"report\"\n")
	pdf := []byte("%PDF-1.4\n%%EOF\n")
	files := map[string][]byte{
		"good/ct.mha":         gcapitest.SampleMHA(1, 4, 4, 1),
		"good/report.pdf":     pdf,
		"good/values.json":    []byte(`{"lung-volume": 1.5}`),
		"twopdf/ct.mha":       gcapitest.SampleMHA(2, 4, 4, 1),
		"twopdf/a.pdf":        pdf,
		"twopdf/b.pdf":        pdf,
		"badjson/ct.mha":      gcapitest.SampleMHA(3, 4, 4, 1),
		"badjson/values.json": []byte(`{"lung-volume": "large"}`),
	}
	old := time.Now().Add(-time.Hour)
	for rel, b := range files {
		p := filepath.Join(f.drop, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func TestCheckAppliesRunsFolderRules(t *testing.T) {
	f := folderFixture(t)
	r := runCLI(t, map[string]string{"GRAND_CHALLENGE_TOKEN": "good-token"}, "check", "--config", f.cfg)
	if r.code != exitError {
		t.Errorf("exit %d, want %d", r.code, exitError)
	}
	for _, want := range []string{
		"FAIL  watch[0] folder twopdf: twopdf: 2 files match \"*.pdf\" for report",
		"FAIL  watch[0] folder badjson: values.json in badjson: lung-volume:",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("check lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "folder good:") {
		t.Errorf("check failed the good folder:\n%s", r.stdout)
	}
	if n := len(f.srv.Uploads()); n != 0 {
		t.Errorf("check uploaded %d files", n)
	}
}

func TestPlanDoesNotCallARefusedFolderReady(t *testing.T) {
	f := folderFixture(t)
	r := runCLI(t, map[string]string{"GRAND_CHALLENGE_TOKEN": "good-token"}, "plan", "--config", f.cfg)
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(r.stdout, "\n") {
		for _, key := range []string{"good", "twopdf", "badjson"} {
			if strings.Contains(l, " "+key+" ") {
				lines[key] = strings.Fields(l)[0]
			}
		}
	}
	if lines["good"] != "ready" || lines["twopdf"] != planFails || lines["badjson"] != planFails {
		t.Errorf("states %v, want good ready and the others %s:\n%s", lines, planFails, r.stdout)
	}
}
