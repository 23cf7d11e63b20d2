package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/status"
)

// TestForget dismisses failed images as an operator does, from the state
// file and through a running agent: a dismissed image leaves the failed
// count in status and /metrics and keeps its story in status ID; a
// finished one is refused, with its state named and exit code 1.
func TestForget(t *testing.T) {
	f := newFixture(t, "t", "")
	st, err := state.Open(f.state, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range []*state.Image{
		{Watch: f.drop, Key: "case1.mhd", State: state.Failed, ActionDone: true, LastError: "import failed: Could not read header",
			Files: []state.File{{Rel: "case1.mhd", Size: 300}}},
		{Watch: f.drop, Key: "case2.mha", State: state.Failed, ActionDone: true, LastError: "import failed: not an image",
			Files: []state.File{{Rel: "case2.mha", Size: 300}}},
		{Watch: f.drop, Key: "case3.mha", State: state.Finished, ActionDone: true, ItemPK: "0c5b",
			Files: []state.File{{Rel: "case3.mha", Size: 4096}}},
	} {
		if err := st.Create(img); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	counts := func(t *testing.T) map[string]int {
		t.Helper()
		r := runCLI(t, nil, "status", "--config", f.cfg, "--json")
		var rep status.Report
		if err := json.Unmarshal([]byte(r.stdout), &rep); r.code != exitOK || err != nil {
			t.Fatalf("status --json: exit %d, %v\n%s%s", r.code, err, r.stdout, r.stderr)
		}
		return rep.Counts
	}

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{{"forget"}, {"forget", "case1"}, {"retry", "--drop"}, {"retry", "--drop", "--failed"}} {
			if r := runCLI(t, nil, append(args, "--config", f.cfg)...); r.code != exitUsage {
				t.Errorf("%s: exit %d, want %d; stderr %q", strings.Join(args, " "), r.code, exitUsage, r.stderr)
			}
		}
	})
	t.Run("a failed image, from the state file", func(t *testing.T) {
		r := runCLI(t, nil, "forget", "--config", f.cfg, "1")
		if r.code != exitOK || !strings.Contains(r.stdout, "dismissed 1: 1") {
			t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		if c := counts(t); c["failed"] != 1 || c["dismissed"] != 1 {
			t.Errorf("counts %v; want failed 1, dismissed 1", c)
		}
		r = runCLI(t, nil, "status", "--config", f.cfg)
		if strings.Contains(r.stdout, "case1.mhd") || !strings.Contains(r.stdout, "dismissed 1") {
			t.Errorf("status lists the dismissed image, or does not count it:\n%s", r.stdout)
		}
		r = runCLI(t, nil, "status", "--config", f.cfg, "1")
		for _, want := range []string{"state     dismissed\n", "  failed  Could not read header\n"} {
			if r.code != exitOK || !strings.Contains(r.stdout, want) {
				t.Errorf("status 1 lacks %q:\n%s", want, r.stdout)
			}
		}
		if r := runCLI(t, nil, "status", "--config", f.cfg, "--all"); !strings.Contains(r.stdout, "case1.mhd") {
			t.Errorf("status --all does not list the dismissed image:\n%s", r.stdout)
		}
	})
	t.Run("a finished image is refused", func(t *testing.T) {
		r := runCLI(t, nil, "forget", "--config", f.cfg, "3")
		if r.code != exitError || !strings.Contains(r.stderr, "image 3 is finished, not failed") {
			t.Errorf("exit %d, stderr %q; want %d and the refusal naming image 3 and its state", r.code, r.stderr, exitError)
		}
		if c := counts(t); c["finished"] != 1 || c["dismissed"] != 1 {
			t.Errorf("counts %v; want finished 1, dismissed 1: nothing changed", c)
		}
	})

	t.Run("through a running agent", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		src, err := os.ReadFile(f.cfg)
		if err != nil {
			t.Fatal(err)
		}
		f.writeConfig(t, strings.Replace(string(src), `listen = ""`, fmt.Sprintf("listen = %q", addr), 1))
		defer f.writeConfig(t, string(src))

		ctx, cancel := context.WithCancel(context.Background())
		var logs strings.Builder
		c := &cli{stdout: io.Discard, stderr: &logs, getenv: func(k string) string {
			return map[string]string{"GRAND_CHALLENGE_TOKEN": "t"}[k]
		}}
		done := make(chan error, 1)
		go func() { done <- c.dispatch(ctx, []string{"run", "--config", f.cfg}) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		}()
		metrics := func() string {
			resp, err := http.Get("http://" + addr + "/metrics")
			if err != nil {
				return ""
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return string(b)
		}
		for deadline := time.Now().Add(30 * time.Second); metrics() == ""; {
			select {
			case err := <-done:
				done <- err
				t.Fatalf("run ended before its status endpoint answered: %v", err)
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatal("the agent's status endpoint did not answer within 30s")
			}
		}
		if m := metrics(); !strings.Contains(m, `gcingest_images{state="failed"} 1`+"\n") {
			t.Fatalf("before: /metrics lacks failed 1:\n%s", m)
		}
		r := runCLI(t, nil, "retry", "--drop", "--config", f.cfg, "2")
		if r.code != exitOK || !strings.Contains(r.stdout, "dismissed 1: 2") {
			t.Fatalf("retry --drop 2: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		m := metrics()
		for _, want := range []string{`gcingest_images{state="failed"} 0` + "\n", `gcingest_images{state="dismissed"} 2` + "\n"} {
			if !strings.Contains(m, want) {
				t.Errorf("/metrics lacks %q:\n%s", want, m)
			}
		}
		r = runCLI(t, nil, "forget", "--config", f.cfg, "3")
		if r.code != exitError || !strings.Contains(r.stderr, "image 3 is finished, not failed") {
			t.Errorf("forget 3: exit %d, stderr %q; want %d and the refusal naming image 3 and its state", r.code, r.stderr, exitError)
		}
	})
}
