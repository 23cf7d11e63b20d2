package main

import (
	"context"

	"github.com/gcingest/gcingest/check"
)

const helpPlan = `A dry run: scans every drop folder once and prints how its files would be
grouped into images, which images are ready (settled and complete) and
which wait, and why. It uploads nothing and contacts no server. When no agent
runs, it also reads the state file (read-only) and marks images already
recorded with the same files as "recorded", with their state and item.
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
	return check.Plan(ctx, check.PlanOptions{Config: cfg, Getenv: c.getenv, Out: c.stdout,
		Logger: newLogger(cfg, c.stderr, ""), Version: versionString()})
}
