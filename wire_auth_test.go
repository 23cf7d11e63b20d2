package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gcingest/gcingest/agent"
	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

// TestTokenRevokedMidRunStopsWithAuthCode revokes the token while the
// agent runs: the next request the pipeline sends is refused with 401, and
// the agent stops with exit code 3 instead of retrying for ever.
func TestTokenRevokedMidRunStopsWithAuthCode(t *testing.T) {
	f := newFixture(t, "good-token", `settle = "100ms"`)
	// A gateway in front of the fake that answers 401, as the server does
	// for a revoked token, once told to.
	target, _ := url.Parse(f.srv.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var revoked atomic.Bool
	var refusals atomic.Int32
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if revoked.Load() && strings.HasPrefix(r.URL.Path, "/api/") {
			refusals.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("WWW-Authenticate", "Bearer")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"detail":"Invalid token."}`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer gw.Close()
	src, err := os.ReadFile(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.writeConfig(t, strings.Replace(string(src), fmt.Sprintf("url = %q", f.srv.URL),
		fmt.Sprintf("url = %q\ntoken = \"good-token\"", gw.URL), 1))
	cfg, err := config.Load(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("GRAND_CHALLENGE_TOKEN", "")
	t.Setenv("GRAND_CHALLENGE_AUTHORIZATION", "")

	var logMu sync.Mutex
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&lockedWriter{mu: &logMu, buf: &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	logText := func() string {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	up := make(chan struct{})
	var upOnce sync.Once
	done := make(chan error, 1)
	go func() {
		done <- runAgent(ctx, agent.Options{Config: cfg, Token: "good-token", Logger: log, Version: "test",
			Ready: func(agent.Info) { upOnce.Do(func() { close(up) }) }})
	}()
	select {
	case <-up:
	case err := <-done:
		t.Fatalf("agent stopped before it was up: %v\n%s", err, logText())
	case <-time.After(30 * time.Second):
		t.Fatalf("agent not up\n%s", logText())
	}

	revoked.Store(true)
	if err := os.WriteFile(filepath.Join(f.drop, "ct.mha"), gcapitest.SampleMHA(1, 4, 4, 2), 0o644); err != nil {
		t.Fatal(err)
	}
	var runErr error
	select {
	case runErr = <-done:
	case <-time.After(60 * time.Second):
		cancel()
		<-done
		t.Fatalf("agent still running 60s after the token was refused %d times\n%s", refusals.Load(), logText())
	}
	if !errors.Is(runErr, gcapi.ErrUnauthorized) {
		t.Errorf("runAgent = %v, want an error matching gcapi.ErrUnauthorized", runErr)
	}
	var stderr bytes.Buffer
	if code := exitCode(runErr, &stderr); code != exitAuth {
		t.Errorf("exit code %d, want %d; stderr %s", code, exitAuth, stderr.String())
	}
	if !strings.Contains(stderr.String(), "check the token") {
		t.Errorf("stderr lacks the hint: %s", stderr.String())
	}
	if strings.Contains(stderr.String()+logText(), "good-token") {
		t.Error("the token was printed")
	}
}
