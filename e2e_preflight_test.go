package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gcingest/gcingest/agent"
	"github.com/gcingest/gcingest/folderlock"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

// TestE2ECheckSaysWhatRunDoes gives `gcingest check` and `gcingest run`
// (the built binary, as the service user: nobody when the tests run as
// root, so that permission bits count) one misconfiguration at a time,
// with real folders and the fake server, and requires check's verdict to
// be run's outcome: pass where run starts, WARN where it starts and logs a
// warning, FAIL where it refuses to start (with the exit code the table
// names), and check's line in run's words.
func TestE2ECheckSaysWhatRunDoes(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end process test; runs without -short")
	}
	const (
		pass = "pass"
		warn = "warn"
		fail = "fail"
	)
	const starts = -1
	tests := []struct {
		name  string
		setup func(t *testing.T, p *preflight)
		// verdict is check's; exit is run's exit code, or starts.
		verdict string
		exit    int
		words   string // in check's WARN or FAIL line, which run says too
	}{
		{"all good", func(*testing.T, *preflight) {}, pass, starts, ""},
		{"drop folder not writable, files moved from it", func(t *testing.T, p *preflight) {
			p.readOnly(t, p.drop)
		}, fail, exitUsage, "not writable by this user, so files cannot be moved"},
		{"drop folder not writable, files kept", func(t *testing.T, p *preflight) {
			p.readOnly(t, p.drop)
			p.edit(t, fmt.Sprintf("after_upload = \"move\"\ndone_dir = %q\nfailed_dir = %q\n", p.done, p.failed), "after_upload = \"keep\"\n")
		}, warn, starts, "readable, but not writable by this user"},
		{"done_dir not writable", func(t *testing.T, p *preflight) {
			p.readOnly(t, p.done)
		}, fail, exitUsage, "watch[0].done_dir"},
		{"failed_dir not writable", func(t *testing.T, p *preflight) {
			p.readOnly(t, p.failed)
		}, fail, exitUsage, "watch[0].failed_dir"},
		{"state folder not writable", func(t *testing.T, p *preflight) {
			dir := filepath.Join(p.dir, "state")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			p.readOnly(t, dir)
		}, fail, exitError, "state.path"},
		{"state file of another user", func(t *testing.T, p *preflight) {
			if p.uid < 0 {
				t.Skip("needs root, to give the state file to another user than the agent's")
			}
			st := filepath.Join(p.dir, "state", "state.db")
			if err := os.WriteFile(st, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}, fail, exitError, "state.path"},
		{"drop folder locked by another agent", func(t *testing.T, p *preflight) {
			l, err := folderlock.Acquire(p.drop, "host scanner2, pid 4242, state /var/lib/gcingest/state.db")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
		}, fail, exitLocked, "watched by another gcingest (host scanner2, pid 4242"},
		{"unknown archive", func(t *testing.T, p *preflight) {
			p.edit(t, `archive = "e2e"`, `archive = "no-such-archive"`)
		}, fail, exitUsage, `watch[0].archive "no-such-archive": not found`},
		{"unknown interface", func(t *testing.T, p *preflight) {
			p.edit(t, `interface = "`+e2eInterface+`"`, `interface = "no-such-interface"`)
		}, fail, exitUsage, `watch[0].interface "no-such-interface": the server has no such interface`},
		{"archive the account can only view", func(t *testing.T, p *preflight) {
			p.srv.AddArchiveAccess("viewed", "Viewed", gcapitest.AccessView)
			p.edit(t, `archive = "e2e"`, `archive = "viewed"`)
		}, fail, exitUsage, "may not add items to it"},
		{"token refused", func(t *testing.T, p *preflight) {
			p.edit(t, fmt.Sprintf("token = %q", p.srv.Token()), `token = "a-wrong-token"`)
		}, fail, exitAuth, "token: the server at"},
		{"status port held by another program", func(t *testing.T, p *preflight) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			p.edit(t, `listen = ""`, fmt.Sprintf("listen = %q", ln.Addr().String()))
		}, fail, exitError, "port already in use"},
		{"done_dir on another file system", func(t *testing.T, p *preflight) {
			other, err := os.MkdirTemp("/dev/shm", "gcingest-preflight-")
			if err != nil {
				t.Skipf("no /dev/shm to stand for another file system: %v", err)
			}
			t.Cleanup(func() { os.RemoveAll(other) })
			if same, err := agent.SameFileSystem(p.dir, other); err != nil || same {
				t.Skip("/dev/shm is on the same file system as the temp dir here")
			}
			p.own(t, other)
			p.edit(t, fmt.Sprintf("done_dir = %q", p.done), fmt.Sprintf("done_dir = %q", other))
		}, warn, starts, "not on the same file system"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPreflight(t)
			tt.setup(t, p)

			chk := p.command(t, "check")
			var out, errb bytes.Buffer
			chk.Stdout, chk.Stderr = &out, &errb
			code := exitOf(t, chk.Run())
			verdict, line := pass, ""
			var warnings []string
			for _, l := range strings.Split(out.String(), "\n") {
				mark, text, _ := strings.Cut(l, "  ")
				switch mark {
				case "FAIL":
					verdict = fail
				case "WARN":
					warnings = append(warnings, strings.TrimSpace(text))
					if verdict == pass {
						verdict = warn
					}
				default:
					continue
				}
				if tt.words != "" && strings.Contains(text, tt.words) && line == "" {
					line = strings.TrimSpace(text)
				}
			}
			if (verdict == fail) != (code != exitOK) {
				t.Errorf("check exited with %d but its verdict is %s", code, verdict)
			}
			if verdict != tt.verdict {
				t.Errorf("check's verdict is %s, want %s:\n%s%s", verdict, tt.verdict, out.String(), errb.String())
			}
			if tt.words != "" && line == "" {
				t.Errorf("check has no WARN or FAIL line with %q:\n%s", tt.words, out.String())
			}

			exit, log := p.run(t)
			if exit != tt.exit {
				t.Errorf("run: exit %d, want %d (-1: starts)\n%s", exit, tt.exit, log)
			}
			// Started, run warns of what check warned of, once each, and
			// of nothing else.
			if up, _, ok := strings.Cut(log, "agent up"); exit == starts && ok {
				if n := strings.Count(up, "level=WARN"); n != len(warnings) {
					t.Errorf("run started with %d warnings, check gave %d:\n%s\n%s", n, len(warnings), strings.Join(warnings, "\n"), log)
				}
				for _, w := range warnings {
					if !strings.Contains(up, w) {
						t.Errorf("run does not warn as check does:\ncheck: %s\nrun:\n%s", w, log)
					}
				}
			}
			// The same words: check's line is run's error, or its warning.
			if line != "" && !strings.Contains(log, line) {
				t.Errorf("run does not say what check does:\ncheck: %s\nrun:\n%s", line, log)
			}
		})
	}
}

// preflight is one fake server, the drop, done and failed folders and a
// config, all usable by the user the binary runs as.
type preflight struct {
	*e2eEnv
	uid, gid int // the user the binary runs as; -1: the test's own
}

func newPreflight(t *testing.T) *preflight {
	t.Helper()
	e := newE2E(t, gcapitest.Options{}, "")
	p := &preflight{e2eEnv: e, uid: -1, gid: -1}
	if os.Geteuid() == 0 {
		// As root, permission bits would not stop the agent: it runs as
		// nobody, with its folders its own.
		const nobody = 65534
		p.uid, p.gid = nobody, nobody
		state := filepath.Join(e.dir, "state")
		if err := os.MkdirAll(state, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{e.drop, e.done, e.failed, state, e.config} {
			p.own(t, d)
		}
		for _, d := range []string{e.dir, filepath.Dir(e.dir), filepath.Dir(gcingestBinary(t))} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	return p
}

// own gives path to the user the binary runs as.
func (p *preflight) own(t *testing.T, path string) {
	t.Helper()
	if p.uid < 0 {
		return
	}
	if err := os.Chown(path, p.uid, p.gid); err != nil {
		t.Fatal(err)
	}
}

// readOnly makes dir readable but not writable for the binary's user.
func (p *preflight) readOnly(t *testing.T, dir string) {
	t.Helper()
	if p.uid >= 0 {
		if err := os.Chown(dir, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o755) })
}

// edit replaces old, which must be there, by new in the config.
func (p *preflight) edit(t *testing.T, old, new string) {
	t.Helper()
	b, err := os.ReadFile(p.config)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("config lacks %q:\n%s", old, b)
	}
	if err := os.WriteFile(p.config, bytes.Replace(b, []byte(old), []byte(new), 1), 0o600); err != nil {
		t.Fatal(err)
	}
}

// command is `gcingest cmd --config` as the binary's user.
func (p *preflight) command(t *testing.T, cmd string) *exec.Cmd {
	c := exec.Command(gcingestBinary(t), cmd, "--config", p.config)
	c.Env = append(os.Environ(), "GRAND_CHALLENGE_TOKEN=")
	if p.uid >= 0 {
		runAs(c, uint32(p.uid), uint32(p.gid))
	}
	return c
}

// run starts `gcingest run` and returns its exit code, or -1 once it is up
// (it is stopped then), with what it wrote until then.
func (p *preflight) run(t *testing.T) (int, string) {
	t.Helper()
	var out bytes.Buffer
	w := &lockedWriter{mu: &p.logsMu, buf: &out}
	cmd := p.command(t, "run")
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	text := func() string {
		p.logsMu.Lock()
		defer p.logsMu.Unlock()
		return out.String()
	}
	deadline := time.After(30 * time.Second)
	for tick := time.NewTicker(20 * time.Millisecond); ; {
		select {
		case err := <-exited:
			return exitOf(t, err), text()
		case <-deadline:
			cmd.Process.Kill()
			<-exited
			t.Fatalf("run neither started nor exited within 30s:\n%s", text())
		case <-tick.C:
			if !strings.Contains(text(), "agent up") {
				continue
			}
			tick.Stop()
			cmd.Process.Signal(syscall.SIGTERM)
			if err := <-exited; err != nil {
				t.Errorf("run exited with %v after SIGTERM", err)
			}
			return -1, text()
		}
	}
}

// exitOf is the exit code of a finished command.
func exitOf(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	t.Fatal(err)
	return 0
}

// Re-checking a live service's config passes: the status port and the
// folder locks are held by the running agent of this very config, which
// check recognises (it answers on the port; its lock names this host and
// this state file).
func TestE2ECheckOfALiveServicePasses(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end process test; runs without -short")
	}
	p := newPreflight(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p.edit(t, `listen = ""`, fmt.Sprintf("listen = %q", addr))

	var log bytes.Buffer
	w := &lockedWriter{mu: &p.logsMu, buf: &log}
	run := p.command(t, "run")
	run.Stdout, run.Stderr = w, w
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	defer func() {
		run.Process.Signal(syscall.SIGTERM)
		<-exited
	}()
	text := func() string {
		p.logsMu.Lock()
		defer p.logsMu.Unlock()
		return log.String()
	}
	waitFor(t, 30*time.Second, "the agent to be up", func() bool { return strings.Contains(text(), "agent up") }, text)

	chk := p.command(t, "check")
	var out bytes.Buffer
	chk.Stdout, chk.Stderr = &out, &out
	if code := exitOf(t, chk.Run()); code != exitOK {
		t.Errorf("check of the running agent's config exited with %d:\n%s", code, out.String())
	}
	for _, want := range []string{
		"ok    status.listen " + addr + ": held by the running gcingest",
		"ok    watch[0].path " + p.drop + ": watched by the running gcingest of this config",
		"all checks passed",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check lacks %q:\n%s", want, out.String())
		}
	}
}
