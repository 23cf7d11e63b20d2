package main

import (
	"context"
	"errors"
	"fmt"
	"os/user"
	"runtime"

	"github.com/kardianos/service"
)

const helpService = `Manages gcingest as a system service (systemd on Linux, launchd on macOS,
the service control manager on Windows):

  install    register "gcingest run --config <absolute path of FILE>" to start
             at boot (Linux: as user gcingest, after network-online.target and
             remote-fs.target); the config is checked first
  uninstall  remove the registration (state and config stay)
  start, stop, restart
  status     print running, stopped or not installed

Needs root (Administrator on Windows) except for status. The Debian package
installs and enables the service itself; use this on other systems.
`

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
		path = cfg.Path
		if runtime.GOOS == "linux" {
			if _, err := user.Lookup("gcingest"); err != nil {
				return fmt.Errorf("service install: user gcingest does not exist; create it with: useradd --system --home-dir /var/lib/gcingest --shell /usr/sbin/nologin gcingest")
			}
		}
	}
	if path == "" {
		path = "/etc/gcingest/config.toml" // only the name matters for these actions
	}
	sc, err := serviceConfig(path)
	if err != nil {
		return err
	}
	s, err := service.New(&program{}, sc)
	if err != nil {
		return fmt.Errorf("service: %w", err)
	}
	if action == "status" {
		st, err := s.Status()
		switch {
		case errors.Is(err, service.ErrNotInstalled):
			fmt.Fprintln(c.stdout, "gcingest service: not installed")
			return nil
		case err != nil:
			return fmt.Errorf("service status: %w", err)
		}
		word := map[service.Status]string{service.StatusRunning: "running", service.StatusStopped: "stopped"}[st]
		if word == "" {
			word = "unknown"
		}
		fmt.Fprintf(c.stdout, "gcingest service (%s): %s\n", s.Platform(), word)
		return nil
	}
	if err := service.Control(s, action); err != nil {
		return fmt.Errorf("service %s: %w", action, err)
	}
	fmt.Fprintf(c.stdout, "gcingest service: %s done (%s)\n", action, s.Platform())
	if action == "install" {
		fmt.Fprintf(c.stdout, "runs: %s run --config %s\nstart it with: gcingest service start\n", sc.Executable, path)
	}
	return nil
}
