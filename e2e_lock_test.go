package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

// TestE2ESecondAgentOnOneFolderIsRefused runs two agents with two state
// files on one drop folder, as two hosts on one share would: the second is
// refused with exit code 4 and a message naming the folder and the first
// agent, and every image lands once. Before the folder lock, 28 of 30 items
// got their value set twice.
func TestE2ESecondAgentOnOneFolderIsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end process test; runs without -short")
	}
	e := newE2E(t, gcapitest.Options{Seed: 3}, "")
	want := e.writeImages(10)
	first := e.start()
	waitFor(t, 30*time.Second, "the first agent to be up", func() bool {
		return strings.Contains(e.logSince(e.started), "agent up")
	}, e.logTail)

	// The second config differs from the first only in its state file.
	src, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	otherState := filepath.Join(e.dir, "state2", "state.db")
	second := filepath.Join(e.dir, "second.toml")
	cfg := strings.Replace(string(src), filepath.Join(e.dir, "state", "state.db"), otherState, 1)
	if cfg == string(src) {
		t.Fatal("could not point the second config at another state file")
	}
	if err := os.WriteFile(second, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(gcingestBinary(t), "run", "--config", second)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(), "GRAND_CHALLENGE_TOKEN=")
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the second agent kept running on a watched folder\n%s", out.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitLocked {
		t.Fatalf("second agent: %v, want exit code %d\n%s", err, exitLocked, out.String())
	}
	for _, w := range []string{e.drop, "watched by another gcingest", "state " + filepath.Join(e.dir, "state", "state.db")} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("second agent's message lacks %q:\n%s", w, out.String())
		}
	}

	waitFor(t, 2*time.Minute, "every image moved to done_dir", func() bool {
		return countFiles(e.done) == len(want) && countFiles(e.drop) == 0
	}, e.logTail)
	e.stop(first)
	e.assertExactlyOnce(want)

	// Once the first has stopped, the folder is free for the second.
	cmd = exec.Command(gcingestBinary(t), "run", "--config", second)
	out.Reset()
	var lw = &lockedWriter{mu: &e.logsMu, buf: e.logs}
	cmd.Stdout, cmd.Stderr = lw, lw
	cmd.Env = append(os.Environ(), "GRAND_CHALLENGE_TOKEN=")
	e.started = e.logLen()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.stop(cmd)
}
