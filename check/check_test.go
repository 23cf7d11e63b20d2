package check

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/agent"
	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

// fixture is a fake server with an archive and interfaces, a drop folder,
// and a config for them.
type fixture struct {
	srv       *gcapitest.Server
	dir, drop string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := gcapitest.NewServer(gcapitest.Options{Token: "good-token", Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(srv.Close)
	srv.AddArchive("my-archive", "My archive")
	srv.AddInterface("ct-image", "Image")
	srv.AddInterface("report", "PDF file")
	srv.AddInterface("lung-volume", "Float")
	dir := t.TempDir()
	f := &fixture{srv: srv, dir: dir, drop: filepath.Join(dir, "drop")}
	for _, d := range []string{"drop", "done", "failed"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// config writes and loads a config with one watch on the drop folder,
// extra added to it.
func (f *fixture) config(t *testing.T, iface, extra string) *config.Config {
	t.Helper()
	path := filepath.Join(f.dir, "config.toml")
	toml := fmt.Sprintf(`[grand_challenge]
url = %q
[state]
path = %q
[status]
listen = ""
[[watch]]
path = %q
archive = "my-archive"
interface = %q
after_upload = "move"
done_dir = %q
failed_dir = %q
%s`, f.srv.URL, filepath.Join(f.dir, "state.db"), f.drop, iface, filepath.Join(f.dir, "done"), filepath.Join(f.dir, "failed"), extra)
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func env(token string) func(string) string {
	return func(k string) string {
		if k == "GRAND_CHALLENGE_TOKEN" {
			return token
		}
		return ""
	}
}

// run runs the checks and returns what they printed.
func run(t *testing.T, cfg *config.Config, token string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := Run(context.Background(), Options{Config: cfg, Getenv: env(token), Out: &out, Version: "test",
		Logger: func(string) *slog.Logger { return slog.New(slog.DiscardHandler) }})
	return out.String(), err
}

// folderFixture holds three folder items ready now: one run accepts, one
// with two files for one file interface, one whose values.json holds text
// for a Float.
func folderFixture(t *testing.T) (*fixture, *config.Config) {
	t.Helper()
	f := newFixture(t)
	cfg := f.config(t, "ct-image", "group = \"folder\"\nsettle = \"1s\"\n[watch.values]\n\"*.pdf\" = \"report\"\n")
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
	return f, cfg
}

// check runs every rule of run on the folder items ready now, with the
// server's interfaces, and fails each that run would refuse.
func TestCheckAppliesRunsFolderRules(t *testing.T) {
	f, cfg := folderFixture(t)
	out, err := run(t, cfg, "good-token")
	if err == nil || !strings.Contains(err.Error(), "checks above failed") {
		t.Errorf("err = %v, want the failed checks counted", err)
	}
	for _, want := range []string{
		"FAIL  watch[0] folder twopdf: twopdf: 2 files match \"*.pdf\" for report",
		"FAIL  watch[0] folder badjson: values.json in badjson: lung-volume:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "folder good:") {
		t.Errorf("check failed the good folder:\n%s", out)
	}
	if n := len(f.srv.Uploads()); n != 0 {
		t.Errorf("check uploaded %d files", n)
	}
}

// plan shows a folder item that run would refuse as failing, not ready.
func TestPlanDoesNotCallARefusedFolderReady(t *testing.T) {
	_, cfg := folderFixture(t)
	var out bytes.Buffer
	err := Plan(context.Background(), PlanOptions{Config: cfg, Getenv: env("good-token"), Out: &out,
		Logger: slog.New(slog.DiscardHandler), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(out.String(), "\n") {
		for _, key := range []string{"good", "twopdf", "badjson"} {
			if strings.Contains(l, " "+key+" ") {
				lines[key] = strings.Fields(l)[0]
			}
		}
	}
	if lines["good"] != "ready" || lines["twopdf"] != PlanFails || lines["badjson"] != PlanFails {
		t.Errorf("states %v, want good ready and the others %s:\n%s", lines, PlanFails, out.String())
	}
	// The heading counts them, so that its counts add up to the rows.
	if want := ": 1 ready, 2 fails, 0 waiting, 0 ignored\n"; !strings.Contains(out.String(), want) {
		t.Errorf("plan's heading lacks %q:\n%s", want, out.String())
	}
}

// A DICOM Image Set socket takes DICOM series only, de-identified with the
// embedded procedure, whose SOP classes check names; folder mode cannot
// feed one.
func TestCheckDICOMImageSet(t *testing.T) {
	for _, tt := range []struct {
		name, extra string
		wantOK      bool
		want        string
	}{
		{"auto", "", true, `DICOM Image Set: DICOM series only, each de-identified here with Grand Challenge's procedure 0.`},
		{"folder mode", "group = \"folder\"\n", false, "not supported in folder mode"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.srv.AddInterface("dicom-set", "DICOM Image Set")
			out, err := run(t, f.config(t, "dicom-set", tt.extra), "good-token")
			if got := err == nil; got != tt.wantOK {
				t.Errorf("err = %v; want passing: %v\n%s", err, tt.wantOK, out)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("check output lacks %q:\n%s", tt.want, out)
			}
			if tt.wantOK && !strings.Contains(out, "1.2.840.10008.5.1.4.1.1.2 (CT Image Storage)") {
				t.Errorf("check output does not name the accepted SOP class:\n%s", out)
			}
		})
	}
}

// No token is a config error; a refused one stops the checks with
// ErrTokenRefused.
func TestCheckToken(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t, "ct-image", "")
	out, err := run(t, cfg, "")
	var ce *agent.ConfigError
	if !errors.As(err, &ce) || !strings.Contains(out, "FAIL  token:") {
		t.Errorf("no token: err = %v, want a *agent.ConfigError and a FAIL line:\n%s", err, out)
	}
	out, err = run(t, cfg, "wrong-token")
	if !errors.Is(err, ErrTokenRefused) || !strings.Contains(out, "FAIL  token: the server at") {
		t.Errorf("wrong token: err = %v, want ErrTokenRefused and a FAIL line:\n%s", err, out)
	}
}
