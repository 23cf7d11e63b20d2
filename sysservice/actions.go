package sysservice

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/kardianos/service"

	"github.com/gcingest/gcingest/config"
)

// The states every service action reports.
const (
	StateNotInstalled = "not installed"
	StateStopped      = "installed, stopped"
	StateRunning      = "running"
)

// Control runs action (uninstall, start, stop, restart or status) on the
// service registered for the config at cfgPath, and writes to w the state
// the service is in afterwards. An action that has nothing to do (start a
// running service) says so and succeeds; one on a service not installed
// fails, except status and uninstall.
func Control(w io.Writer, cfgPath, action string) error {
	s, err := New(cfgPath)
	if err != nil {
		return err
	}
	before, err := State(s)
	if err != nil {
		return fmt.Errorf("service %s: %w", action, err)
	}
	say := func(format string, a ...any) {
		fmt.Fprintf(w, "gcingest service (%s): %s\n", s.Platform(), fmt.Sprintf(format, a...))
	}
	switch {
	case action == "status":
		say("%s", before)
		return nil
	case before == StateNotInstalled && action == "uninstall":
		say("not installed; nothing to uninstall")
		return nil
	case before == StateNotInstalled:
		say("not installed")
		return fmt.Errorf("service %s: the service is not installed; install it first: gcingest service install", action)
	case before == StateRunning && action == "start":
		say("already running")
		return nil
	case before == StateStopped && action == "stop":
		say("already stopped")
		return nil
	}
	if err := needAdmin(action); err != nil {
		say("%s", before)
		return err
	}
	if action == "uninstall" && before == StateRunning {
		if err := controlService(s, "stop"); err != nil {
			return fmt.Errorf("service uninstall: stop the running service first: %w", err)
		}
	}
	ctlErr := controlService(s, action)
	after, err := State(s)
	if err != nil {
		after = "unknown (" + err.Error() + ")"
	}
	if ctlErr != nil {
		say("%s", after)
		return fmt.Errorf("service %s failed; the service is %s: %w%s", action, after, ctlErr, logHint(s.Platform()))
	}
	say("%s done; the service is %s", action, after)
	return nil
}

// Install registers the service for cfg, after checking on Linux that the
// init system runs the agent as User and that the user can use the config
// and the state folder (creating a missing user and state folder). It
// writes to w what it did and the state the service is in afterwards.
func Install(w io.Writer, cfg *config.Config) error {
	cfgPath := cfg.Path
	s, err := New(cfgPath)
	if err != nil {
		return err
	}
	before, err := State(s)
	if err != nil {
		return fmt.Errorf("service install: %w", err)
	}
	if before != StateNotInstalled {
		fmt.Fprintf(w, "gcingest service (%s): already installed (%s)\n", s.Platform(), before)
		return errors.New("service install: the service is already installed; to install it anew: gcingest service uninstall, then install")
	}
	if err := needAdmin("install"); err != nil {
		return err
	}
	if err := prepareInstall(w, s, cfg); err != nil {
		return fmt.Errorf("service install: %w", err)
	}
	if err := controlService(s, "install"); err != nil {
		return fmt.Errorf("service install: %w", err)
	}
	after, err := State(s)
	if err != nil {
		after = "unknown (" + err.Error() + ")"
	}
	sc, _ := Config(cfgPath)
	fmt.Fprintf(w, "gcingest service (%s): install done; the service is %s\n", s.Platform(), after)
	who := ""
	if runtime.GOOS == "linux" {
		who = " as user " + User
	}
	fmt.Fprintf(w, "runs%s: %s run --config %s\nstart it with: gcingest service start\n", who, sc.Executable, cfgPath)
	return nil
}

// PackagedUnit is the unit the .deb and .rpm install; Install refuses to
// register a second one beside it.
const PackagedUnit = "/usr/lib/systemd/system/gcingest.service"

// prepareInstall checks, on Linux, that the init system can run the agent
// as the service user and that the user can use the config and state; it
// creates a missing user and state folder.
func prepareInstall(w io.Writer, s service.Service, cfg *config.Config) error {
	if runtime.GOOS != "linux" {
		return nil
	}
	switch s.Platform() {
	case "linux-systemd":
		if _, err := os.Stat(PackagedUnit); err == nil {
			return fmt.Errorf("the gcingest package installed the unit %s already; use it: systemctl enable --now gcingest", PackagedUnit)
		}
	case "linux-upstart", "linux-openrc", "unix-systemv":
		// systemd's User=, upstart's setuid, and our own OpenRC and SysV
		// scripts (Config) run the agent as the user.
	default:
		return fmt.Errorf("the init system here (%s) would run the agent as root, which gcingest refuses; start \"gcingest run --config %s\" from it as user %s instead",
			s.Platform(), cfg.Path, User)
	}
	u, err := ensureServiceUser(w, User)
	if err != nil {
		return err
	}
	return prepareServiceFiles(w, cfg, u)
}

// State says what state the service is in: StateNotInstalled,
// StateStopped, StateRunning, or a failed one. kardianos/service's
// SysV status turns a stopped service (the script exits non-zero) into a
// bare "exit status 1"; there the init script answers directly.
func State(s service.Service) (string, error) {
	if s.Platform() == "unix-systemv" {
		return sysvState()
	}
	st, err := s.Status()
	switch {
	case errors.Is(err, service.ErrNotInstalled):
		return StateNotInstalled, nil
	case err != nil && strings.Contains(err.Error(), "failed state"):
		// systemd: the agent exited with an error and was not restarted.
		return "installed, failed (it exited with an error)", nil
	case err != nil:
		return "", fmt.Errorf("ask %s for the service's state: %w", s.Platform(), err)
	case st == service.StatusRunning:
		return StateRunning, nil
	case st == service.StatusStopped:
		return StateStopped, nil
	}
	return "", fmt.Errorf("%s reports an unknown state", s.Platform())
}

// sysvInitScript is where the SysV script lives.
const sysvInitScript = "/etc/init.d/gcingest"

func sysvState() (string, error) {
	if _, err := os.Stat(sysvInitScript); errors.Is(err, os.ErrNotExist) {
		return StateNotInstalled, nil
	}
	err := exec.Command(sysvInitScript, "status").Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return StateRunning, nil
	case errors.As(err, &ee) && ee.ExitCode() == 3:
		return StateStopped, nil
	case errors.As(err, &ee):
		// An older script (kardianos's own) exits 1 when stopped.
		return StateStopped, nil
	}
	return "", fmt.Errorf("run %s status: %w", sysvInitScript, err)
}

// controlService runs an action. On SysV it runs the init script itself,
// so that the script's own message ("exited at once; the end of
// /var/log/gcingest.err: ...") reaches the user instead of "exit status 1".
func controlService(s service.Service, action string) error {
	if s.Platform() == "unix-systemv" {
		switch action {
		case "start", "stop", "restart":
			out, err := exec.Command(sysvInitScript, action).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s %s: %w: %s", sysvInitScript, action, err, strings.TrimSpace(string(out)))
			}
			return nil
		case "uninstall":
			if err := s.Uninstall(); err != nil {
				return err
			}
			removeRCLinks()
			return nil
		}
	}
	switch action {
	case "start":
		return s.Start()
	case "stop":
		return s.Stop()
	case "restart":
		return s.Restart()
	case "install":
		return s.Install()
	case "uninstall":
		return s.Uninstall()
	}
	return fmt.Errorf("unknown service action %q", action)
}

// removeRCLinks removes the /etc/rc?.d links kardianos's SysV install made
// and its uninstall leaves dangling.
func removeRCLinks() {
	links, _ := filepath.Glob("/etc/rc[0-6S].d/[SK][0-9][0-9]gcingest")
	for _, l := range links {
		if t, err := os.Readlink(l); err == nil && strings.HasSuffix(t, "/gcingest") {
			os.Remove(l)
		}
	}
}

// needAdmin refuses a changing action early, with the command to use,
// rather than after the service manager's "permission denied".
func needAdmin(action string) error {
	if runtime.GOOS == "windows" || os.Geteuid() == 0 {
		return nil
	}
	return fmt.Errorf("service %s needs root: sudo gcingest service %s", action, action)
}

// logHint says where a failed service wrote why.
func logHint(platform string) string {
	switch platform {
	case "linux-systemd":
		return "; see journalctl -u gcingest"
	case "unix-systemv", "linux-openrc":
		return "; see /var/log/gcingest.err"
	case "darwin-launchd":
		return `; see log show --predicate 'process == "gcingest"'`
	case "windows-service":
		return "; see the Application event log (source gcingest)"
	}
	return ""
}
