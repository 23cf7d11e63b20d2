package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/kardianos/service"

	"github.com/gcingest/gcingest/config"
)

// stopTimeout bounds Stop: systemd's default stop timeout is 90 s, the
// Windows service manager's about 20 s; the agent needs a few seconds to
// commit its last step and close the state file.
const stopTimeout = 15 * time.Second

// serviceConfig is how gcingest registers itself: `gcingest run --config
// <absolute path>` as user gcingest where the platform has one, after the
// network and remote file systems are up (drop folders are often shares).
func serviceConfig(cfgPath string) (*service.Config, error) {
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
		// Never root (service_scripts.go): systemd gets User=, upstart
		// setuid; kardianos's SysV and OpenRC scripts ignore UserName, so
		// ours replace them.
		sc.UserName = serviceUser
		sc.Dependencies = []string{
			"After=network-online.target remote-fs.target",
			"Wants=network-online.target",
		}
		sc.Option["SysvScript"] = sysvScript(sc.Executable, abs, serviceUser)
		sc.Option["OpenRCScript"] = openRCScript(sc.Executable, abs, serviceUser)
	case "windows":
		sc.Option["DelayedAutoStart"] = true
		sc.Option["OnFailure"] = "restart"
	case "darwin":
		sc.Option["KeepAlive"] = true
		sc.Option["RunAtLoad"] = true
	}
	return sc, nil
}

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
	sc, err := serviceConfig(cfg.Path)
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
	p.log = slog.New(redact(newServiceHandler(sl, logLevel(cfg.Log.Level)), token))
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

// serviceHandler is a slog.Handler writing to kardianos/service's logger:
// the system log of the platform. Attributes are rendered as key=value
// after the message, like slog's text handler.
type serviceHandler struct {
	l     service.Logger
	level slog.Level
	attrs []byte // pre-rendered WithAttrs
	group string
}

func newServiceHandler(l service.Logger, level slog.Level) *serviceHandler {
	return &serviceHandler{l: l, level: level}
}

func (h *serviceHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *serviceHandler) Handle(_ context.Context, r slog.Record) error {
	var buf bytes.Buffer
	buf.WriteString(r.Message)
	buf.Write(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		appendAttr(&buf, h.group, a)
		return true
	})
	msg := buf.String()
	switch {
	case r.Level >= slog.LevelError:
		return h.l.Error(msg)
	case r.Level >= slog.LevelWarn:
		return h.l.Warning(msg)
	}
	return h.l.Info(msg)
}

func (h *serviceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	var buf bytes.Buffer
	buf.Write(h.attrs)
	for _, a := range as {
		appendAttr(&buf, h.group, a)
	}
	n.attrs = buf.Bytes()
	return &n
}

func (h *serviceHandler) WithGroup(name string) slog.Handler {
	n := *h
	if n.group != "" {
		n.group += "."
	}
	n.group += name
	return &n
}

func appendAttr(buf *bytes.Buffer, group string, a slog.Attr) {
	v := a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	key := a.Key
	if group != "" {
		key = group + "." + key
	}
	if v.Kind() == slog.KindGroup {
		for _, g := range v.Group() {
			appendAttr(buf, key, g)
		}
		return
	}
	fmt.Fprintf(buf, " %s=%q", key, v.String())
}
