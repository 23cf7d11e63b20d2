package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/watch"
)

// newConfig writes a config for a fake server with one archive and one
// image interface, and a drop folder, and loads it.
func newConfig(t *testing.T, srv *gcapitest.Server, extra string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	drop := filepath.Join(dir, "drop")
	if err := os.Mkdir(drop, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.toml")
	toml := fmt.Sprintf(`[grand_challenge]
url = %q
[state]
path = %q
[status]
listen = ""
[[watch]]
path = %q
archive = "my-archive"
interface = "ct-image"
settle = "100ms"
rescan = "1s"
%s`, srv.URL, filepath.Join(dir, "state.db"), drop, extra)
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func newServer(t *testing.T) *gcapitest.Server {
	t.Helper()
	srv := gcapitest.NewServer(gcapitest.Options{Token: "good-token", Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(srv.Close)
	srv.AddArchive("my-archive", "My archive")
	srv.AddInterface("ct-image", "Image")
	return srv
}

// An image dropped into the folder ends up in an archive item; cancelling
// ctx stops Run with no error.
func TestRunUploadsADroppedImage(t *testing.T) {
	srv := newServer(t)
	cfg := newConfig(t, srv, "")
	up := make(chan Info, 1)
	a, err := New(Options{Config: cfg, Token: "good-token", Logger: slog.New(slog.DiscardHandler), Version: "test",
		Ready: func(i Info) { up <- i }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case i := <-up:
		if i.Pipeline == nil || i.Client == nil {
			t.Fatalf("Ready got %+v, want a pipeline and a client", i)
		}
	case err := <-done:
		t.Fatalf("Run returned before the agent was up: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("agent not up after 30s")
	}
	if err := os.WriteFile(filepath.Join(cfg.Watch[0].Path, "ct.mha"), gcapitest.SampleMHA(1, 4, 4, 2), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(srv.Items("my-archive")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no archive item 60s after the image was dropped")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
}

// Start-up mistakes of the config are a *ConfigError that names the key.
func TestRunRefusesABadConfig(t *testing.T) {
	srv := newServer(t)
	tests := []struct {
		name   string
		change func(*config.Config)
		want   string
	}{
		{"missing drop folder", func(c *config.Config) { c.Watch[0].Path = filepath.Join(t.TempDir(), "gone") }, "watch[0].path"},
		{"unknown archive", func(c *config.Config) { c.Watch[0].Archive = "no-such-archive" }, "watch[0].archive"},
		{"unknown interface", func(c *config.Config) { c.Watch[0].Interface = "no-such-interface" }, "watch[0].interface"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := newConfig(t, srv, "")
			tt.change(cfg)
			a, err := New(Options{Config: cfg, Token: "good-token", Logger: slog.New(slog.DiscardHandler), Version: "test"})
			if err != nil {
				t.Fatal(err)
			}
			err = a.Run(context.Background())
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Run = %v, want a *ConfigError", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %s", err, tt.want)
			}
		})
	}
}

func TestNewNeedsConfigAndLogger(t *testing.T) {
	if _, err := New(Options{Logger: slog.New(slog.DiscardHandler)}); err == nil {
		t.Error("New without a config: no error")
	}
	if _, err := New(Options{Config: config.Default()}); err == nil {
		t.Error("New without a logger: no error")
	}
}

// A config received on Reload that passes its checks replaces the watch
// list (the agent is up again, watching the new folder); one naming a
// missing folder is refused and the running generation keeps working.
func TestRunAppliesAReloadedWatchList(t *testing.T) {
	srv := newServer(t)
	cfg := newConfig(t, srv, "")
	r := runReloading(t, cfg)
	reload := r.reload

	bad := *cfg
	bad.Watch = append([]watch.Spec{}, cfg.Watch...)
	bad.Watch[0].Path = filepath.Join(t.TempDir(), "gone")
	reload <- &bad

	next := *cfg
	second := filepath.Join(t.TempDir(), "second")
	if err := os.Mkdir(second, 0o755); err != nil {
		t.Fatal(err)
	}
	next.Watch = []watch.Spec{cfg.Watch[0]}
	next.Watch[0].Path = second
	reload <- &next // taken once the refused one was checked
	r.waitUp("reload")

	if err := os.WriteFile(filepath.Join(second, "ct.mha"), gcapitest.SampleMHA(1, 4, 4, 2), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(srv.Items("my-archive")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no archive item 60s after an image was dropped into the reloaded watch's folder")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r.restarted() {
		t.Fatal("the agent restarted twice: the config naming a missing folder was applied")
	}
	r.stop()
}

// reloading is an agent running with a Reload channel, for the reload
// tests: up hears each start of a generation.
type reloading struct {
	t      *testing.T
	reload chan *config.Config
	up     chan Info
	done   chan error
	cancel context.CancelFunc
}

// runReloading runs the agent of cfg until the test ends, and returns once
// it is up.
func runReloading(t *testing.T, cfg *config.Config) *reloading {
	t.Helper()
	r := &reloading{t: t, reload: make(chan *config.Config, 1), up: make(chan Info, 4), done: make(chan error, 1)}
	a, err := New(Options{Config: cfg, Token: "good-token", Logger: slog.New(slog.DiscardHandler), Version: "test",
		Reload: r.reload, Ready: func(i Info) { r.up <- i }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	t.Cleanup(cancel)
	go func() { r.done <- a.Run(ctx) }()
	r.waitUp("start")
	return r
}

// waitUp waits for the next start of a generation.
func (r *reloading) waitUp(what string) {
	r.t.Helper()
	select {
	case <-r.up:
	case err := <-r.done:
		r.t.Fatalf("%s: Run returned %v", what, err)
	case <-time.After(30 * time.Second):
		r.t.Fatalf("%s: agent not up after 30s", what)
	}
}

// restarted reports whether a generation started that no waitUp took.
func (r *reloading) restarted() bool {
	select {
	case <-r.up:
		return true
	default:
		return false
	}
}

// stop cancels the agent and checks Run returned nil.
func (r *reloading) stop() {
	r.t.Helper()
	r.cancel()
	if err := <-r.done; err != nil {
		r.t.Errorf("Run after cancel = %v, want nil", err)
	}
}

// A status port held by another program is a state that passes: Run
// ends with a runtime error (exit 1, which the service manager restarts),
// not a config error (exit 2, which it never restarts).
func TestBusyStatusPortIsNotAConfigError(t *testing.T) {
	srv := newServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := newConfig(t, srv, "")
	cfg.Status.Listen = ln.Addr().String()
	a, err := New(Options{Config: cfg, Token: "good-token", Logger: slog.New(slog.DiscardHandler), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	err = a.Run(t.Context())
	var ce *ConfigError
	if err == nil || errors.As(err, &ce) || !strings.Contains(err.Error(), "port already in use") {
		t.Errorf("Run with a busy status port = %v; want a runtime error naming the port in use, not a *ConfigError", err)
	}
}
