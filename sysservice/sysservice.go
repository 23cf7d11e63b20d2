// Package sysservice is gcingest as a system service (systemd, upstart,
// OpenRC or SysV on Linux, launchd on macOS, the Windows service control
// manager), through kardianos/service: how it registers (Config, and the
// SysV and OpenRC scripts that run the agent as User, never root), the
// actions of `gcingest service` with the state each leaves, and a
// slog.Handler writing to the system log. The adapter that runs the agent
// under the service manager sits beside main.
package sysservice

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/kardianos/service"
)

// Config is how gcingest registers itself: `gcingest run --config
// <absolute path of cfgPath>` as User where the platform has one, after the
// network and remote file systems are up (drop folders are often shares).
func Config(cfgPath string) (*service.Config, error) {
	abs, err := filepath.Abs(cfgPath)
	if err != nil {
		return nil, err
	}
	sc := &service.Config{
		Name:        "gcingest",
		DisplayName: "gcingest",
		Description: "Uploads medical images from drop folders to Grand Challenge, exactly once.",
		Arguments:   []string{"run", "--config", abs},
		Option: service.KeyValue{
			"Restart":      "on-failure",
			"ReloadSignal": "HUP",
			"LogOutput":    false,
		},
	}
	if exe, err := os.Executable(); err == nil {
		sc.Executable = exe
	}
	switch runtime.GOOS {
	case "linux":
		// Never root (scripts.go): systemd gets User=, upstart
		// setuid; kardianos's SysV and OpenRC scripts ignore UserName, so
		// ours replace them.
		sc.UserName = User
		sc.Dependencies = []string{
			"After=network-online.target remote-fs.target",
			"Wants=network-online.target",
		}
		sc.Option["SysvScript"] = SysVScript(sc.Executable, abs, User)
		sc.Option["OpenRCScript"] = OpenRCScript(sc.Executable, abs, User)
	case "windows":
		sc.Option["DelayedAutoStart"] = true
		sc.Option["OnFailure"] = "restart"
	case "darwin":
		sc.Option["KeepAlive"] = true
		sc.Option["RunAtLoad"] = true
	}
	return sc, nil
}

// New builds the kardianos service for the config at cfgPath, for the
// actions (install, start, status, …): its program never runs.
func New(cfgPath string) (service.Service, error) {
	sc, err := Config(cfgPath)
	if err != nil {
		return nil, err
	}
	s, err := service.New(idle{}, sc)
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	return s, nil
}

// idle is the program of a service built for its actions only.
type idle struct{}

func (idle) Start(service.Service) error { return nil }
func (idle) Stop(service.Service) error  { return nil }
