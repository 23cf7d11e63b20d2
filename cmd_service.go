package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/kardianos/service"

	"github.com/gcingest/gcingest/config"
)

const helpService = `Manages gcingest as a system service (systemd, upstart, OpenRC or a SysV
init script on Linux, launchd on macOS, the service control manager on
Windows):

  install    register "gcingest run --config <absolute path of FILE>" to start
             at boot; the config is checked first. On Linux the agent runs as
             user gcingest, never as root: install creates that user (as
             the packages do) when it is missing, and the state folder when
             it is missing, and refuses, naming the chown that fixes it,
             when the user could not read the config or write the state
  uninstall  stop it and remove the registration (state and config stay)
  start, stop, restart
  status     print the state: not installed, installed, stopped, or running

Every action prints the state the service is in afterwards. Needs root
(Administrator on Windows) except for status. The .deb and .rpm packages
install the systemd unit themselves: there, use systemctl.
`

// The states every service action reports.
const (
	stateNotInstalled = "not installed"
	stateStopped      = "installed, stopped"
	stateRunning      = "running"
)

func (c *cli) cmdService(ctx context.Context, args []string) error {
	fs := newFlagSet("service")
	cfgPath := configFlag(fs)
	pos, err := c.parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return &usageError{cmd: "service", msg: "service needs one action: install, uninstall, start, stop, restart or status"}
	}
	action := pos[0]
	switch action {
	case "install", "uninstall", "start", "stop", "restart", "status":
	default:
		return &usageError{cmd: "service", msg: fmt.Sprintf("unknown service action %q", action)}
	}

	path := *cfgPath
	if action == "install" {
		cfg, err := c.loadConfig("service", path)
		if err != nil {
			return err
		}
		return c.serviceInstall(cfg.Path, func(s service.Service) error { return c.prepareInstall(s, cfg) })
	}
	if path == "" {
		// Only the service's name matters for these actions.
		path = defaultConfigPath(c.getenv)
	}
	s, err := newService(path)
	if err != nil {
		return err
	}
	before, err := serviceState(s)
	if err != nil {
		return fmt.Errorf("service %s: %w", action, err)
	}
	say := func(format string, a ...any) {
		fmt.Fprintf(c.stdout, "gcingest service (%s): %s\n", s.Platform(), fmt.Sprintf(format, a...))
	}
	switch {
	case action == "status":
		say("%s", before)
		return nil
	case before == stateNotInstalled && action == "uninstall":
		say("not installed; nothing to uninstall")
		return nil
	case before == stateNotInstalled:
		say("not installed")
		return fmt.Errorf("service %s: the service is not installed; install it first: gcingest service install", action)
	case before == stateRunning && action == "start":
		say("already running")
		return nil
	case before == stateStopped && action == "stop":
		say("already stopped")
		return nil
	}
	if err := needAdmin(action); err != nil {
		say("%s", before)
		return err
	}
	if action == "uninstall" && before == stateRunning {
		if err := controlService(s, "stop"); err != nil {
			return fmt.Errorf("service uninstall: stop the running service first: %w", err)
		}
	}
	ctlErr := controlService(s, action)
	after, err := serviceState(s)
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

// serviceInstall installs the service for cfgPath after prepare passed.
func (c *cli) serviceInstall(cfgPath string, prepare func(service.Service) error) error {
	s, err := newService(cfgPath)
	if err != nil {
		return err
	}
	before, err := serviceState(s)
	if err != nil {
		return fmt.Errorf("service install: %w", err)
	}
	if before != stateNotInstalled {
		fmt.Fprintf(c.stdout, "gcingest service (%s): already installed (%s)\n", s.Platform(), before)
		return errors.New("service install: the service is already installed; to install it anew: gcingest service uninstall, then install")
	}
	if err := needAdmin("install"); err != nil {
		return err
	}
	if err := prepare(s); err != nil {
		return fmt.Errorf("service install: %w", err)
	}
	if err := controlService(s, "install"); err != nil {
		return fmt.Errorf("service install: %w", err)
	}
	after, err := serviceState(s)
	if err != nil {
		after = "unknown (" + err.Error() + ")"
	}
	sc, _ := serviceConfig(cfgPath)
	fmt.Fprintf(c.stdout, "gcingest service (%s): install done; the service is %s\n", s.Platform(), after)
	who := ""
	if runtime.GOOS == "linux" {
		who = " as user " + serviceUser
	}
	fmt.Fprintf(c.stdout, "runs%s: %s run --config %s\nstart it with: gcingest service start\n", who, sc.Executable, cfgPath)
	return nil
}

// packagedUnit is the unit the .deb and .rpm install.
const packagedUnit = "/usr/lib/systemd/system/gcingest.service"

// prepareInstall checks, on Linux, that the init system can run the agent
// as the service user and that the user can use the config and state; it
// creates a missing user and state folder.
func (c *cli) prepareInstall(s service.Service, cfg *config.Config) error {
	if runtime.GOOS != "linux" {
		return nil
	}
	switch s.Platform() {
	case "linux-systemd":
		if _, err := os.Stat(packagedUnit); err == nil {
			return fmt.Errorf("the gcingest package installed the unit %s already; use it: systemctl enable --now gcingest", packagedUnit)
		}
	case "linux-upstart", "linux-openrc", "unix-systemv":
		// systemd's User=, upstart's setuid, and our own OpenRC and SysV
		// scripts (serviceConfig) run the agent as the user.
	default:
		return fmt.Errorf("the init system here (%s) would run the agent as root, which gcingest refuses; start \"gcingest run --config %s\" from it as user %s instead",
			s.Platform(), cfg.Path, serviceUser)
	}
	u, err := ensureServiceUser(c.stdout, serviceUser)
	if err != nil {
		return err
	}
	return prepareServiceFiles(c.stdout, cfg, u)
}

// newService builds the kardianos service for the config at cfgPath.
func newService(cfgPath string) (service.Service, error) {
	sc, err := serviceConfig(cfgPath)
	if err != nil {
		return nil, err
	}
	s, err := service.New(&program{}, sc)
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	return s, nil
}

// serviceState says what state the service is in. kardianos/service's
// SysV status turns a stopped service (the script exits non-zero) into a
// bare "exit status 1"; there the init script answers directly.
func serviceState(s service.Service) (string, error) {
	if s.Platform() == "unix-systemv" {
		return sysvState()
	}
	st, err := s.Status()
	switch {
	case errors.Is(err, service.ErrNotInstalled):
		return stateNotInstalled, nil
	case err != nil && strings.Contains(err.Error(), "failed state"):
		// systemd: the agent exited with an error and was not restarted.
		return "installed, failed (it exited with an error)", nil
	case err != nil:
		return "", fmt.Errorf("ask %s for the service's state: %w", s.Platform(), err)
	case st == service.StatusRunning:
		return stateRunning, nil
	case st == service.StatusStopped:
		return stateStopped, nil
	}
	return "", fmt.Errorf("%s reports an unknown state", s.Platform())
}

// sysvInitScript is where the SysV script lives.
const sysvInitScript = "/etc/init.d/gcingest"

func sysvState() (string, error) {
	if _, err := os.Stat(sysvInitScript); errors.Is(err, os.ErrNotExist) {
		return stateNotInstalled, nil
	}
	err := exec.Command(sysvInitScript, "status").Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stateRunning, nil
	case errors.As(err, &ee) && ee.ExitCode() == 3:
		return stateStopped, nil
	case errors.As(err, &ee):
		// An older script (kardianos's own) exits 1 when stopped.
		return stateStopped, nil
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
