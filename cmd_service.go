package main

import (
	"context"
	"fmt"

	"github.com/gcingest/gcingest/sysservice"
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
		return sysservice.Install(c.stdout, cfg)
	}
	if path == "" {
		// Only the service's name matters for these actions.
		path = defaultConfigPath(c.getenv)
	}
	return sysservice.Control(c.stdout, path, action)
}
