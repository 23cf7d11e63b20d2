package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/kardianos/service"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/redact"
	"github.com/gcingest/gcingest/sysservice"
)

// stopTimeout bounds Stop: systemd's default stop timeout is 90 s, the
// Windows service manager's about 20 s; the agent needs a few seconds to
// commit its last step and close the state file.
const stopTimeout = 15 * time.Second

// program is the kardianos/service adapter: Start launches the same agent
// `gcingest run` runs and returns at once; Stop cancels it and waits,
// bounded by stopTimeout.
type program struct {
	cfg    *config.Config
	token  string
	log    *slog.Logger
	parent context.Context

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{} // made by the creator; closed when the agent returned
	err    error         // the agent's error, valid after done
}

func (p *program) Start(s service.Service) error {
	ctx, cancel := context.WithCancel(p.parent)
	p.mu.Lock()
	p.cancel = cancel
	done := p.done
	p.mu.Unlock()
	go func() {
		err := runForeground(ctx, p.cfg, p.token, p.log)
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
		if err != nil && ctx.Err() == nil && runtime.GOOS == "windows" {
			// The Windows service manager only ends the service on a
			// stop request; ask for one so the failure is visible (and the
			// recovery action runs) instead of an idle "running" service.
			s.Stop()
		}
	}()
	return nil
}

func (p *program) Stop(s service.Service) error {
	p.mu.Lock()
	cancel, done := p.cancel, p.done
	p.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-time.After(stopTimeout):
		return fmt.Errorf("agent did not stop within %s", stopTimeout)
	}
}

// runService runs the agent under a service manager, logging to its log
// (the journal via syslog, the Windows event log).
func runService(ctx context.Context, cfg *config.Config, token string) error {
	sc, err := sysservice.Config(cfg.Path)
	if err != nil {
		return err
	}
	p := &program{cfg: cfg, token: token, parent: ctx, done: make(chan struct{})}
	// RunWait (unix) returns when the manager asks to stop or when the
	// agent ended on its own, so a failed agent exits non-zero and the
	// manager's restart policy applies.
	sc.Option["RunWait"] = func() {
		sig := make(chan os.Signal, 1)
		notifyStop(sig)
		defer stopNotify(sig)
		select {
		case <-sig:
		case <-p.done:
		case <-ctx.Done():
		}
	}
	s, err := service.New(p, sc)
	if err != nil {
		return fmt.Errorf("service: %w", err)
	}
	sl, err := s.Logger(nil)
	if err != nil {
		return fmt.Errorf("service logger: %w", err)
	}
	p.log = slog.New(redact.Handler(sysservice.NewHandler(sl, logLevel(cfg.Log.Level)), token))
	if err := s.Run(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil && !errors.Is(p.err, context.Canceled) {
		return p.err
	}
	return nil
}
