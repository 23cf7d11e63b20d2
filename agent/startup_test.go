package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/folderlock"
	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/status"
	"github.com/gcingest/gcingest/watch"
)

// At start, only a refused token (exit 3) and a slug the server does not
// know (a config error, exit 2) end the agent. Any other answer, however
// odd (a proxy's page, a body too large, a 500), is what the pipeline
// retries later: the agent starts and waits for the server.
func TestServerCheckStartsOnAnOddAnswer(t *testing.T) {
	tests := []struct {
		name   string
		answer func(w http.ResponseWriter)
		want   func(error) bool
	}{
		{"a proxy's page", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte("<html>login to the proxy</html>"))
		}, func(err error) bool { return err == nil }},
		{"a 400", func(w http.ResponseWriter) { http.Error(w, "bad request", http.StatusBadRequest) }, func(err error) bool { return err == nil }},
		{"a refused token", func(w http.ResponseWriter) {
			http.Error(w, `{"detail":"Invalid token."}`, http.StatusUnauthorized)
		}, func(err error) bool { return errors.Is(err, gcapi.ErrUnauthorized) }},
		{"no such archive", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"count":0,"next":null,"previous":null,"results":[]}`))
		}, func(err error) bool { var ce *ConfigError; return errors.As(err, &ce) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { tt.answer(w) }))
			defer srv.Close()
			c, err := gcapi.New(srv.URL, "token", gcapi.WithRetry(gcapi.RetryPolicy{MaxAttempts: 1}))
			if err != nil {
				t.Fatal(err)
			}
			s := &Startup{Config: &config.Config{Watch: []watch.Spec{{Archive: "a", Interface: "ct"}}}, Client: c, Hold: true}
			s.checkServer(t.Context())
			if !tt.want(s.err) {
				t.Errorf("checkServer failed with %v", s.err)
			}
		})
	}
}

func TestIsImagePattern(t *testing.T) {
	for p, want := range map[string]bool{"overlay*.mha": true, "*.PDF": false, "*.nii.gz": true, "scan.tif*": true, "*.json": false} {
		if got := isImagePattern(p); got != want {
			t.Errorf("isImagePattern(%q) = %v, want %v", p, got, want)
		}
	}
}

// findings runs the start-up's folder and lock checks of cfg as check does
// (no Hold) and returns what it noted.
func findings(t *testing.T, s *Startup) []Finding {
	t.Helper()
	var got []Finding
	s.Note = func(f Finding) { got = append(got, f) }
	s.checkFolders()
	s.checkLocks()
	return got
}

func levels(fs []Finding) (fails, warns int, text string) {
	for _, f := range fs {
		switch f.Level {
		case LevelFail:
			fails++
		case LevelWarn:
			warns++
		}
		text += f.Text + "\n"
	}
	return fails, warns, text
}

// A drop folder the agent may read but not write: run could not hold its
// lock file there, and would fail every move or delete out of it, again
// and again. So the start-up fails it where files must leave the folder
// (run exits 2) and warns where they stay.
func TestDropFolderNotWritable(t *testing.T) {
	drop, done := t.TempDir(), t.TempDir()
	readOnly := func(p string) error {
		if p == drop {
			return fmt.Errorf("%s is not writable: permission denied", p)
		}
		return nil
	}
	tests := []struct {
		name      string
		after     watch.AfterUpload
		fail      string
		wantFails int
		want      string
	}{
		{"move", watch.AfterUploadMove, "", 1, "cannot be moved or deleted"},
		{"delete", watch.AfterUploadDelete, "", 1, "cannot be moved or deleted"},
		{"keep with failed_dir", watch.AfterUploadKeep, done, 1, "failed_dir set"},
		{"keep", watch.AfterUploadKeep, "", 0, "lock file .gcingest.lock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &config.Config{Watch: []watch.Spec{{Path: drop, AfterUpload: tt.after, DoneDir: done, FailedDir: tt.fail}}}
			s := &Startup{Config: cfg, writable: readOnly}
			fails, warns, text := levels(findings(t, s))
			if fails != tt.wantFails || fails+warns != 1 || !strings.Contains(text, tt.want) {
				t.Errorf("%d failures, %d warnings; want %d failures and %q:\n%s", fails, warns, tt.wantFails, tt.want, text)
			}
			var ce *ConfigError
			if tt.wantFails > 0 && !errors.As(s.err, &ce) {
				t.Errorf("run would return %v; want a *ConfigError (exit 2)", s.err)
			}
		})
	}
	s := &Startup{Config: &config.Config{Watch: []watch.Spec{{Path: drop, AfterUpload: watch.AfterUploadMove, DoneDir: done}}}}
	fails, warns, text := levels(findings(t, s))
	if fails+warns != 0 || !strings.Contains(text, "readable and writable") {
		t.Errorf("a writable drop folder: %d failures, %d warnings:\n%s", fails, warns, text)
	}
}

// A done_dir not made yet is made by run at start; check makes nothing,
// and proves the folder above it writable instead.
func TestMissingDoneDirIsMadeByRunOnly(t *testing.T) {
	root := t.TempDir()
	drop, done := filepath.Join(root, "drop"), filepath.Join(root, "out", "done")
	if err := os.Mkdir(drop, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Watch: []watch.Spec{{Path: drop, AfterUpload: watch.AfterUploadMove, DoneDir: done}}}
	s := &Startup{Config: cfg}
	if fails, warns, text := levels(findings(t, s)); fails+warns != 0 || !strings.Contains(text, "made by run") {
		t.Errorf("check: %d failures, %d warnings:\n%s", fails, warns, text)
	}
	if _, err := os.Stat(done); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("check made done_dir (stat: %v)", err)
	}
	s = &Startup{Config: cfg, Hold: true}
	s.checkFolders()
	if fi, err := os.Stat(done); s.err != nil || err != nil || !fi.IsDir() {
		t.Errorf("run: err %v, done_dir stat %v; want it made", s.err, err)
	}
}

// Another agent's lock on a drop folder fails check as it makes run exit
// with 4, naming that agent; the running agent of the config checked (this
// host, this state file) is no other.
func TestFolderHeldByAnotherAgent(t *testing.T) {
	drop := t.TempDir()
	statePath := filepath.Join(t.TempDir(), "state.db")
	host, _ := os.Hostname()
	cfg := &config.Config{State: config.State{Path: statePath}, Watch: []watch.Spec{{Path: drop}}}
	for _, tt := range []struct {
		name, owner string
		wantFail    bool
	}{
		{"another host", lockOwner("scanner2", 42, statePath), true},
		{"another state file", lockOwner(host, 42, statePath+"2"), true},
		{"this config's running agent", lockOwner(host, 42, statePath), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l, err := folderlock.Acquire(drop, tt.owner)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			s := &Startup{Config: cfg}
			fails, warns, text := levels(findings(t, s))
			if got := fails == 1; got != tt.wantFail || warns != 0 {
				t.Fatalf("%d failures, %d warnings; want failing %v:\n%s", fails, warns, tt.wantFail, text)
			}
			if !strings.Contains(text, tt.owner) {
				t.Errorf("findings do not name the holder %q:\n%s", tt.owner, text)
			}
			var held *folderlock.HeldError
			if tt.wantFail && !errors.As(s.err, &held) {
				t.Errorf("run would return %v; want a *folderlock.HeldError (exit 4)", s.err)
			}
		})
	}
	s := &Startup{Config: cfg}
	if fails, warns, text := levels(findings(t, s)); fails+warns != 0 || !strings.Contains(text, "no other gcingest watches it") {
		t.Errorf("a free folder: %d failures, %d warnings:\n%s", fails, warns, text)
	}
}

// Re-checking a live service's config: its own agent holds the status
// port, which is fine; another program there is not.
func TestStatusPortHeldByTheRunningAgent(t *testing.T) {
	ln, err := status.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- status.ServeListener(ctx, ln, emptySource{}, nil, slog.New(slog.DiscardHandler)) }()
	defer func() { cancel(); <-done }()
	check := func(listen string) (int, string) {
		var got []Finding
		s := &Startup{Config: &config.Config{Status: config.Status{Listen: listen}}, Note: func(f Finding) { got = append(got, f) }}
		s.checkStatusPort(t.Context())
		fails, _, text := levels(got)
		return fails, text
	}
	if fails, text := check(ln.Addr().String()); fails != 0 || !strings.Contains(text, "held by the running gcingest") {
		t.Errorf("port held by a gcingest: %d failures:\n%s", fails, text)
	}
	// Another web server on the port: it answers, but not as gcingest.
	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()
	if fails, text := check(other.Listener.Addr().String()); fails != 1 {
		t.Errorf("port held by another program: %d failures; want 1:\n%s", fails, text)
	}
}

// emptySource is an agent that has recorded nothing.
type emptySource struct{}

func (emptySource) Report(ctx context.Context, q status.Query) (*status.Report, error) {
	return &status.Report{Version: "test", Images: []status.Image{}, Counts: map[string]int{}, Query: q}, nil
}
