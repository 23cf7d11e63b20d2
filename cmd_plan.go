package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/gcingest/gcingest/ingest"
)

const helpPlan = `A dry run: scans every drop folder once and prints how its files would be
grouped into images, which images are ready (settled and complete) and
which wait, and why. It uploads nothing, contacts no server and does not
open the state file, so it works while the agent runs.
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
	// No token is needed; the logger shows only grouping problems.
	log := newLogger(cfg, c.stderr, "")
	for i, w := range cfg.Watches() {
		if i > 0 {
			fmt.Fprintln(c.stdout)
		}
		rep, err := ingest.Plan(ctx, w, log.With(slog.String("watch", w.Path)))
		if err != nil {
			return fmt.Errorf("plan watch[%d] %s: %w", i, w.Path, err)
		}
		if err := rep.WriteText(c.stdout); err != nil {
			return err
		}
	}
	return nil
}
