// Package check says, changing nothing, what run would do with a config
// and what it would refuse: `gcingest check` (the config, the token, the
// archives and interfaces on the server, the folders, and every folder item
// ready now against run's own rules) and `gcingest plan` (how each drop
// folder would be grouped, what is ready, what waits and why).
package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"syscall"
	"time"

	"github.com/gcingest/gcingest/agent"
	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/ingest"
	"github.com/gcingest/gcingest/printable"
)

// Options configure Run.
type Options struct {
	Config *config.Config
	// Getenv reads the environment, for the token.
	Getenv func(string) string
	// Out gets one line per check: "ok", "WARN" or "FAIL".
	Out io.Writer
	// Logger builds the logger once the token is known, so that the
	// logger can scrub it.
	Logger func(token string) *slog.Logger
	// Version names this binary in the User-Agent.
	Version string
	// Echo, after the checks, sends a C-ECHO to each [[dicom]] listener
	// of the running agent, as a scanner would connect.
	Echo bool
}

// ErrTokenRefused is returned (wrapped) when the server refused the token:
// the checks stop there, since every other answer would be a refusal too.
var ErrTokenRefused = errors.New("authentication failed")

// Run checks opts.Config with run's own start-up (agent.Startup), which
// changes nothing here, then what only a pre-flight can: the token's
// source, and every folder item ready now against run's rules. It writes
// one line per check to opts.Out. It creates nothing on the server. It
// returns nil when no check failed; a *agent.ConfigError when there is no
// token; an error wrapping ErrTokenRefused when the server refused it;
// else an error saying how many checks failed.
func Run(ctx context.Context, opts Options) error {
	cfg := opts.Config
	k := &checker{w: opts.Out}
	k.ok("config %s (%s)", cfg.Path, plural(len(cfg.Watch), "watch", "watches"))
	tok, src, err := cfg.Token(opts.Getenv)
	if err != nil {
		k.fail("token: %v", err)
		return &agent.ConfigError{Err: err}
	}
	k.ok("token from %s", src)
	log := opts.Logger(tok)
	// Few quick retries: check answers a person waiting at a terminal.
	cl, err := agent.NewClient(cfg, tok, opts.Version, log, gcapi.WithRetry(gcapi.RetryPolicy{MaxAttempts: 3, MaxDelay: 2 * time.Second}))
	if err != nil {
		k.fail("grand_challenge.url: %v", err)
		return err
	}
	start := &agent.Startup{Config: cfg, Client: cl, Note: k.note}
	if err := start.Run(ctx); errors.Is(err, gcapi.ErrUnauthorized) {
		return fmt.Errorf("token refused by %s: %w", cfg.GrandChallenge.URL, ErrTokenRefused)
	}
	fc := ingest.NewFolderChecker(cl, log)
	for i, w := range agent.Watches(cfg) {
		checkFolderItems(ctx, k, fc, i, w, log.With("watch", w.Path))
	}
	if opts.Echo {
		echo(ctx, k, cfg)
	}
	if k.fails > 0 {
		return fmt.Errorf("check: %d of the checks above failed", k.fails)
	}
	if k.warns > 0 {
		fmt.Fprintf(opts.Out, "no check failed; run starts and logs the %s above\n", plural(k.warns, "warning", "warnings"))
		return nil
	}
	fmt.Fprintln(opts.Out, "all checks passed")
	return nil
}

// echo sends a C-ECHO to each [[dicom]] listener and prints ok or why
// not: the refusal (calling AE title not recognized ...), a TLS failure,
// or no answer at all.
func echo(ctx context.Context, k *checker, cfg *config.Config) {
	if len(cfg.DICOM) == 0 {
		k.warn("--echo: the config has no [[dicom]] table, no listener to echo")
		return
	}
	for i, d := range cfg.DICOM {
		ae, err := agent.EchoListener(ctx, d)
		switch {
		case err == nil:
			k.ok("dicom[%d] C-ECHO from %q to %q at %s: ok", i, ae, d.AETitle, d.Listen)
		case errors.Is(err, syscall.ECONNREFUSED):
			k.fail("dicom[%d] C-ECHO from %q to %q at %s: nothing listens there; is gcingest run going? (%v)", i, ae, d.AETitle, d.Listen, err)
		default:
			k.fail("dicom[%d] C-ECHO from %q to %q at %s: %v", i, ae, d.AETitle, d.Listen, err)
		}
	}
}

// checker prints one line per check and counts failures. A check's text
// quotes folder item names and file names from the drop folders, and the
// server's words: each line is escaped whole (printable.String), so that
// it stays one line and nothing in it acts on the terminal.
type checker struct {
	w            io.Writer
	fails, warns int
}

func (k *checker) ok(format string, a ...any) { k.line("ok    ", format, a) }
func (k *checker) warn(format string, a ...any) {
	k.warns++
	k.line("WARN  ", format, a)
}
func (k *checker) fail(format string, a ...any) {
	k.fails++
	k.line("FAIL  ", format, a)
}

// note prints a finding of run's start-up.
func (k *checker) note(f agent.Finding) {
	switch f.Level {
	case agent.LevelFail:
		k.fail("%s", f.Text)
	case agent.LevelWarn:
		k.warn("%s", f.Text)
	default:
		k.ok("%s", f.Text)
	}
}

func (k *checker) line(mark, format string, a []any) {
	fmt.Fprintf(k.w, "%s%s\n", mark, printable.String(fmt.Sprintf(format, a...)))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
