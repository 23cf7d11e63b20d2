package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"

	"github.com/gcingest/gcingest/check"
)

const helpPlan = `A dry run: scans every drop folder once and prints how its files would be
grouped into images, which images are ready (settled and complete) and
which wait, and why. It uploads nothing. When no agent runs, it also reads
the state file (read-only) and marks images already recorded with the same
files as "recorded", with their state and item. A folder item run would
refuse is marked "fails", with the reason (with a token at hand the server
is asked about its interfaces; without one plan works offline). Each
heading counts the images ready, failing, waiting and ignored; warnings of
the scan follow the tables, on stderr.
`

func (c *cli) cmdPlan(ctx context.Context, args []string) error {
	fs := newFlagSet("plan")
	cfgPath := configFlag(fs)
	pos, err := c.parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &usageError{cmd: "plan", msg: "plan takes no arguments"}
	}
	cfg, err := c.loadConfig("plan", *cfgPath)
	if err != nil {
		return err
	}
	// The scan's log lines (a file skipped, a header it cannot follow) are
	// held until the tables are written, then go to stderr: at a terminal
	// none lands inside a table. The tables say what info lines would (each
	// ignored file and why), so those are left out. No token is needed, but
	// one at hand asks the server, and is scrubbed from the log.
	quiet := *cfg
	if logLevel(quiet.Log.Level) == slog.LevelInfo {
		quiet.Log.Level = "warn"
	}
	tok, _, _ := cfg.Token(c.getenv)
	var logs bytes.Buffer
	err = check.Plan(ctx, check.PlanOptions{Config: cfg, Getenv: c.getenv, Out: c.stdout,
		Logger: newLogger(&quiet, &logs, tok), Version: versionString()})
	if _, werr := c.stderr.Write(logs.Bytes()); err == nil && werr != nil {
		err = fmt.Errorf("write plan's log: %w", werr)
	}
	return err
}
