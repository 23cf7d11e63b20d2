package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/gcingest/gcingest/config"
)

// STUB: the lead replaces this file with agent.go.

// agentInfo describes a running agent to whoever asked to be told when it is
// up (demo, the service adapter, tests).
type agentInfo struct{}

// runAgent runs the watchers and pipeline until ctx is done. ready, if
// non-nil, is called once the agent is up.
func runAgent(ctx context.Context, cfg *config.Config, log *slog.Logger, ready func(a *agentInfo)) error {
	return errors.New("agent not wired yet")
}
