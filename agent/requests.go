package agent

import (
	"context"
	"errors"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/printable"
	"github.com/gcingest/gcingest/status"
)

// Retry sends the failed images with ids (every failed one with failed)
// through the pipeline again: through the running agent's status endpoint,
// or in the state file when no agent answers there. It returns the IDs
// queued; its errors are printable.
func Retry(ctx context.Context, cfg *config.Config, ids []string, failed bool) ([]string, error) {
	return runningOrState(cfg,
		func() ([]string, error) {
			return status.PostRetry(ctx, cfg.Status.Listen, status.RetryRequest{IDs: ids, Failed: failed})
		},
		func() ([]string, error) { return RetryInState(ctx, cfg.State.Path, ids, failed) })
}

// Forget dismisses the failed images with ids, as Retry reaches them. It
// returns the IDs dismissed, which may be some when err is not nil.
func Forget(ctx context.Context, cfg *config.Config, ids []string) ([]string, error) {
	return runningOrState(cfg,
		func() ([]string, error) { return status.PostForget(ctx, cfg.Status.Listen, ids) },
		func() ([]string, error) { return ForgetInState(cfg.State.Path, ids) })
}

// runningOrState asks the running agent of cfg (running), or, when none
// answers at its status address, works on the state file itself (offline).
// The state file's errors quote file names and are escaped here; the
// running agent's answer is escaped already (status.PostRetry).
func runningOrState(cfg *config.Config, running, offline func() ([]string, error)) ([]string, error) {
	var out []string
	err := status.ErrNotRunning
	if cfg.Status.Listen != "" {
		out, err = running()
	}
	if errors.Is(err, status.ErrNotRunning) {
		out, err = offline()
		err = printable.Error(err)
	}
	return out, err
}
