package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/sysservice"
)

// TestServiceStateMessages: without root, every action on a service that
// is not installed says so, and status exits 0.
func TestServiceStateMessages(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("checks the Linux init systems")
	}
	s, err := sysservice.New("/etc/gcingest/config.toml")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := sysservice.State(s); err != nil || st != sysservice.StateNotInstalled {
		t.Skipf("the gcingest service is %q (%v) on this machine; this test needs it absent", st, err)
	}
	tests := []struct {
		action  string
		code    int
		wantOut string
		wantErr string
	}{
		{"status", exitOK, "): not installed\n", ""},
		{"uninstall", exitOK, "not installed; nothing to uninstall", ""},
		{"start", exitError, "not installed", "install it first: gcingest service install"},
		{"stop", exitError, "not installed", "not installed"},
		{"restart", exitError, "not installed", "not installed"},
	}
	for _, tt := range tests {
		t.Run(tt.action, func(t *testing.T) {
			r := runCLI(t, nil, "service", tt.action)
			if r.code != tt.code || !strings.Contains(r.stdout, tt.wantOut) || !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("exit %d (want %d), stdout %q (want %q), stderr %q (want %q)", r.code, tt.code, r.stdout, tt.wantOut, r.stderr, tt.wantErr)
			}
			if strings.Contains(r.stderr, "exit status") {
				t.Errorf("a bare exit status: %q", r.stderr)
			}
		})
	}
}

// TestServiceLifecycleAsUser installs the service on this machine's init
// system, as root in CI: the user is created, the agent runs as that user
// and uploads, and every action reports the state.
func TestServiceLifecycleAsUser(t *testing.T) {
	if testing.Short() {
		t.Skip("installs a service")
	}
	if runtime.GOOS != "linux" || os.Getenv("CI") != "true" || os.Geteuid() != 0 {
		t.Skip("installs a system service: runs only on Linux as root with CI=true (as .ci/run does)")
	}
	probe, err := sysservice.New("/etc/gcingest/config.toml")
	if err != nil {
		t.Fatal(err)
	}
	platform := probe.Platform()
	if platform != "unix-systemv" && platform != "linux-systemd" {
		t.Skipf("init system %s: this test knows SysV and systemd", platform)
	}
	if platform == "linux-systemd" {
		if _, err := os.Stat(sysservice.PackagedUnit); err == nil {
			t.Skip("the gcingest package is installed here")
		}
	}
	if st, _ := sysservice.State(probe); st != sysservice.StateNotInstalled {
		t.Skipf("a gcingest service is already %s here", st)
	}
	_, lookErr := user.Lookup(sysservice.User)
	userBefore := lookErr == nil

	// Everything the agent touches lives under a folder the user can reach.
	dir, err := os.MkdirTemp("", "gcingest-service-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "gcingest")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	srv := gcapitest.NewServer(gcapitest.Options{Token: "t"})
	t.Cleanup(srv.Close)
	srv.AddArchive("my-archive", "My archive")
	srv.AddInterface("ct-image", "Image")
	drop := filepath.Join(dir, "drop")
	os.Mkdir(drop, 0o755)
	cfgPath := filepath.Join(dir, "config.toml")
	cfg := fmt.Sprintf("[grand_challenge]\nurl = %q\ntoken = \"t\"\n[state]\npath = %q\n[status]\nlisten = \"\"\n"+
		"[[watch]]\npath = %q\narchive = \"my-archive\"\ninterface = \"ct-image\"\nsettle = \"1s\"\nrescan = \"1s\"\n",
		srv.URL, filepath.Join(dir, "state", "state.db"), drop)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var logsBefore []string
	for _, p := range []string{"/var/log/gcingest.log", "/var/log/gcingest.err"} {
		if _, err := os.Stat(p); err == nil {
			logsBefore = append(logsBefore, p)
		}
	}
	t.Cleanup(func() {
		exec.Command(bin, "service", "uninstall", "--config", cfgPath).Run()
		os.RemoveAll(dir)
		if len(logsBefore) == 0 {
			os.Remove("/var/log/gcingest.log")
			os.Remove("/var/log/gcingest.err")
		}
		if !userBefore {
			exec.Command("userdel", sysservice.User).Run()
		}
	})
	svc := func(action string) result {
		t.Helper()
		cmd := exec.Command(bin, "service", action, "--config", cfgPath)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return result{out.String(), errb.String(), code}
	}

	if !userBefore {
		// The first install creates the user, then refuses: the user could
		// not read the root-owned config.
		r := svc("install")
		if r.code == 0 || !strings.Contains(r.stdout, "created system user gcingest") ||
			!strings.Contains(r.stderr, "cannot be read by user gcingest: chown gcingest "+cfgPath) {
			t.Fatalf("install with a root-only config: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if st, _ := sysservice.State(probe); st != sysservice.StateNotInstalled {
			t.Fatalf("a refused install left the service %s", st)
		}
	}
	u, err := user.Lookup(sysservice.User)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	os.Chown(cfgPath, uid, gid)

	r := svc("install")
	if r.code != 0 || !strings.Contains(r.stdout, "install done; the service is installed, stopped") ||
		!strings.Contains(r.stdout, "runs as user gcingest: "+bin+" run --config "+cfgPath) {
		t.Fatalf("install: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if fi, err := os.Stat(filepath.Join(dir, "state")); err != nil || fileUID(fi) != u.Uid {
		t.Errorf("the state folder was not created for the user: %v", err)
	}
	if r := svc("install"); r.code == 0 || !strings.Contains(r.stdout, "already installed (installed, stopped)") {
		t.Errorf("second install: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for action, want := range map[string]string{"status": "installed, stopped", "stop": "already stopped"} {
		if r := svc(action); r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want %q", action, r.code, r.stdout, r.stderr, want)
		}
	}

	if r := svc("start"); r.code != 0 || !strings.Contains(r.stdout, "start done; the service is running") {
		t.Fatalf("start: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got := agentUID(t, platform); got != u.Uid {
		t.Errorf("the agent runs as uid %s, want %s (user gcingest)", got, u.Uid)
	}
	if r := svc("status"); !strings.Contains(r.stdout, "): running\n") {
		t.Errorf("status: %q", r.stdout)
	}

	// It works as that user: an image dropped is uploaded.
	if err := os.WriteFile(filepath.Join(drop, "ct.mha"), gcapitest.SampleMHA(1, 4, 4, 2), 0o644); err != nil {
		t.Fatal(err)
	}
	cl, err := gcapi.New(srv.URL, "t")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, err := cl.ArchiveBySlug(ctx, "my-archive")
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; {
		items, err := cl.ArchiveItems(ctx, a.PK)
		if err == nil && len(items) == 1 && items[0].Value("ct-image") != nil {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile("/var/log/gcingest.err")
			t.Fatalf("the service uploaded nothing within 60 s (items %d, %v); its log:\n%s", len(items), err, b)
		}
		time.Sleep(200 * time.Millisecond) // polling the fake, not waiting out a guess
	}
	if fi, err := os.Stat(filepath.Join(dir, "state", "state.db")); err != nil || fileUID(fi) != u.Uid {
		t.Errorf("the state file is not the user's: %v", err)
	}

	if r := svc("restart"); r.code != 0 || !strings.Contains(r.stdout, "restart done; the service is running") {
		t.Errorf("restart: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := svc("uninstall"); r.code != 0 || !strings.Contains(r.stdout, "uninstall done; the service is not installed") {
		t.Errorf("uninstall of a running service: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := svc("status"); r.code != 0 || !strings.Contains(r.stdout, "): not installed\n") {
		t.Errorf("status after uninstall: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if links, _ := filepath.Glob("/etc/rc[0-6].d/[SK][0-9][0-9]gcingest"); len(links) > 0 {
		t.Errorf("uninstall left %v", links)
	}
}

// agentUID is the uid the running service's main process has.
func agentUID(t *testing.T, platform string) string {
	t.Helper()
	var pid string
	switch platform {
	case "unix-systemv":
		b, err := os.ReadFile("/var/run/gcingest.pid")
		if err != nil {
			t.Fatal(err)
		}
		pid = strings.TrimSpace(string(b))
	default:
		out, err := exec.Command("systemctl", "show", "-p", "MainPID", "--value", "gcingest").Output()
		if err != nil {
			t.Fatal(err)
		}
		pid = strings.TrimSpace(string(out))
	}
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
			return f[1]
		}
	}
	t.Fatalf("no Uid in /proc/%s/status", pid)
	return ""
}
