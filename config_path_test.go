package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// runCLIDefault is runCLI with def as the platform's default config path.
func runCLIDefault(t *testing.T, def string, env map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	c := &cli{stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }, defaultConfig: def}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := c.dispatch(ctx, args)
	code := exitCode(err, &errb)
	return result{out.String(), errb.String(), code}
}

func TestConfigPathResolution(t *testing.T) {
	f := newFixture(t, "t", "")
	other := filepath.Join(f.dir, "other.toml")
	src, err := os.ReadFile(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	otherState := filepath.Join(f.dir, "other.db")
	if err := os.WriteFile(other, bytes.Replace(src, []byte(f.state), []byte(otherState), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(f.dir, "missing.toml")

	tests := []struct {
		name       string
		def        string
		env        map[string]string
		args       []string
		wantCode   int
		wantOut    string // in stdout
		wantErr    string // in stderr
		wantNoNote bool   // no "config ... (from)" note on stderr
	}{
		{"flag", missing, nil, []string{"status", "--config", f.cfg}, exitOK, f.state, "", true},
		{"flag wins over the environment", missing, map[string]string{configEnv: other}, []string{"status", "--config", f.cfg}, exitOK, f.state, "", true},
		{"environment", missing, map[string]string{configEnv: other}, []string{"status"}, exitOK, otherState, "config " + other + " (GCINGEST_CONFIG)", false},
		{"environment wins over the default", f.cfg, map[string]string{configEnv: other}, []string{"status"}, exitOK, otherState, "(GCINGEST_CONFIG)", false},
		{"default", f.cfg, nil, []string{"status"}, exitOK, f.state, "config " + f.cfg + " (the default)", false},
		{"no config anywhere", missing, nil, []string{"status"}, exitUsage, "", "--config FILE is required: GCINGEST_CONFIG is not set and the default config " + missing + " does not exist", true},
		{"environment names a missing file", f.cfg, map[string]string{configEnv: missing}, []string{"status"}, exitUsage, "", "missing.toml", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLIDefault(t, tt.def, tt.env, tt.args...)
			if r.code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", r.code, tt.wantCode, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stdout, tt.wantOut) {
				t.Errorf("stdout %q lacks %q", r.stdout, tt.wantOut)
			}
			if !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("stderr %q lacks %q", r.stderr, tt.wantErr)
			}
			if tt.wantNoNote && strings.Contains(r.stderr, "gcingest: config ") {
				t.Errorf("stderr %q notes a config though --config named it", r.stderr)
			}
		})
	}

	t.Run("help names the default and the variable", func(t *testing.T) {
		r := runCLI(t, nil, "status", "--help")
		for _, want := range []string{"$GCINGEST_CONFIG", defaultConfigPath(os.Getenv)} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("help lacks %q:\n%s", want, r.stdout)
			}
		}
	})
}

func TestConfigDefaultPathPerPlatform(t *testing.T) {
	got := defaultConfigPath(func(k string) string {
		if k == "ProgramData" {
			return `D:\PD`
		}
		return ""
	})
	want := map[string]string{
		"linux":   "/etc/gcingest/config.toml",
		"darwin":  "/usr/local/etc/gcingest/config.toml",
		"windows": `D:\PD\gcingest\config.toml`,
	}[runtime.GOOS]
	if want != "" && got != want {
		t.Errorf("default config on %s: got %q, want %q", runtime.GOOS, got, want)
	}
}

func TestConfigWithoutWatch(t *testing.T) {
	f := newFixture(t, "t", "")
	noWatch := filepath.Join(f.dir, "nowatch.toml")
	cfg := "[grand_challenge]\nurl = \"" + f.srv.URL + "\"\ntoken = \"t\"\n[state]\npath = \"" + f.state + "\"\n"
	if err := os.WriteFile(noWatch, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Run("pull, archives and interfaces need none", func(t *testing.T) {
		for _, args := range [][]string{
			{"archives"}, {"interfaces"}, {"pull", "--archive", "my-archive", "--out", t.TempDir()},
		} {
			r := runCLI(t, nil, append(args, "--config", noWatch)...)
			if r.code != exitOK {
				t.Errorf("%s: exit %d, stderr %q", args[0], r.code, r.stderr)
			}
		}
	})
	t.Run("run still needs one", func(t *testing.T) {
		r := runCLI(t, nil, "run", "--config", noWatch)
		if r.code != exitUsage || !strings.Contains(r.stderr, "no [[watch]] table") {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
	})
	t.Run("other keys are still checked", func(t *testing.T) {
		bad := filepath.Join(f.dir, "bad.toml")
		if err := os.WriteFile(bad, []byte(cfg+"[upload]\nconcurrency = 0\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := runCLI(t, nil, "archives", "--config", bad)
		if r.code != exitUsage || !strings.Contains(r.stderr, "upload.concurrency") || strings.Contains(r.stderr, "[[watch]]") {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
	})
}
