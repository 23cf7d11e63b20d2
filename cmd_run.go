package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/kardianos/service"

	"github.com/gcingest/gcingest/agent"
	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/ingest"
	"github.com/gcingest/gcingest/progress"
)

const helpRun = `Runs the agent in the foreground until SIGINT or SIGTERM: watches every
[[watch]] folder, uploads each complete image once, records every step in
the state file. SIGHUP re-reads the config and applies the new watch list.

When started by a service manager (systemd, launchd, the Windows service
control manager) it logs to the system log and stops within the manager's
stop timeout.
`

func (c *cli) cmdRun(ctx context.Context, args []string) error {
	fs := newFlagSet("run")
	cfgPath := configFlag(fs)
	pos, err := c.parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &usageError{cmd: "run", msg: "run takes no arguments"}
	}
	cfg, err := c.loadConfig("run", *cfgPath)
	if err != nil {
		return err
	}
	tok, err := c.token(cfg)
	if err != nil {
		return err
	}
	if !service.Interactive() {
		return runService(ctx, cfg, tok)
	}
	if f, ok := c.stderr.(*os.File); ok && progress.IsTerminal(f) && cfg.Log.Format != "json" {
		return runWithDisplay(ctx, cfg, tok, f)
	}
	log := newLogger(cfg, c.stderr, tok)
	return runForeground(ctx, cfg, tok, log)
}

// runWithDisplay is `gcingest run` at a terminal: the log lines scroll above
// a live display of the DICOM received (per calling AE title: instances,
// bytes, rate) and the uploads in flight (per image: bytes, rate, time
// left; totals).
func runWithDisplay(ctx context.Context, cfg *config.Config, token string, tty *os.File) error {
	disp := progress.New(tty, nil)
	disp.FitTo(progress.TerminalWidth(tty))
	log := newLogger(cfg, disp, token)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		disp.Run(ctx, 500*time.Millisecond)
	}()
	defer func() { cancel(); <-done }()
	return runForegroundProgress(ctx, cfg, token, log, func(ev ingest.ProgressEvent) {
		disp.Update(ev.ID, ev.Key, ev.Sent, ev.Total)
	}, func(info agent.Info) { disp.ReceiveFrom(info.DICOM) })
}

// runForeground is `gcingest run` at a terminal, and what the service
// adapter runs too.
func runForeground(ctx context.Context, cfg *config.Config, token string, log *slog.Logger) error {
	return runForegroundProgress(ctx, cfg, token, log, nil, nil)
}

// runForegroundProgress is runForeground telling progress of the uploads
// and ready of each generation of the agent that is up (either may be
// nil).
func runForegroundProgress(ctx context.Context, cfg *config.Config, token string, log *slog.Logger, progress func(ingest.ProgressEvent), ready func(agent.Info)) error {
	// The config's warnings are the start-up's (agent.Startup), which
	// check prints too.
	log.Info("starting", "version", versionString(), "config", cfg.Path, "watches", len(cfg.Watch))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reload := make(chan *config.Config, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		reloadOnSIGHUP(ctx, cfg.Path, log, reload)
	}()
	err := runAgent(ctx, agent.Options{Config: cfg, Token: token, Logger: log, Version: versionString(), Reload: reload,
		Ready: func(info agent.Info) {
			log.Info("agent up")
			if ready != nil {
				ready(info)
			}
		}, Progress: progress})
	cancel()
	<-done
	if err != nil {
		log.Error("agent stopped", "err", err)
		return err
	}
	log.Info("stopped")
	return nil
}

// runAgent makes the agent of opts and runs it until ctx is done.
func runAgent(ctx context.Context, opts agent.Options) error {
	a, err := agent.New(opts)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// loadReload re-reads the config at path for a SIGHUP. A config that no
// longer validates is logged and ignored: the agent keeps its watches.
func loadReload(path string, log *slog.Logger) *config.Config {
	nc, err := config.Load(path)
	if err != nil {
		log.Error("SIGHUP: config not reloaded; keeping the running watch list", "err", err)
		return nil
	}
	for _, w := range nc.Warnings() {
		log.Warn(w)
	}
	log.Info("SIGHUP: config reloaded", "watches", len(nc.Watch))
	return nc
}

// offer sends nc on ch, replacing a reload not yet taken: only the newest
// config matters.
func offer(ch chan *config.Config, nc *config.Config) {
	for {
		select {
		case ch <- nc:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}
