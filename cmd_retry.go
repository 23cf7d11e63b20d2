package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/gcingest/gcingest/agent"
	"github.com/gcingest/gcingest/printable"
)

const helpRetry = `Sends failed images through the pipeline again: the images with the given
IDs (the first column of gcingest status), or every failed image with
--failed. Fix the cause first (the last error in gcingest status says what
the server or gcingest found). Images still retrying on their own need no
retry. With --drop, the failed images with the given IDs are dismissed for
good instead, as gcingest forget does.

The running agent takes the request through its status endpoint.
`

func (c *cli) cmdRetry(ctx context.Context, args []string) error {
	fs := newFlagSet("retry")
	cfgPath := configFlag(fs)
	failed := fs.Bool("failed", false, "retry every failed image")
	drop := fs.Bool("drop", false, "dismiss the failed images with these IDs for good instead (gcingest forget)")
	ids, err := c.parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *drop {
		if *failed {
			return &usageError{cmd: "retry", msg: "--drop dismisses the images with the IDs given, not every failed one: give IDs, not --failed"}
		}
		return c.forget(ctx, "retry", *cfgPath, ids)
	}
	if len(ids) == 0 && !*failed {
		return &usageError{cmd: "retry", msg: "retry needs image IDs or --failed"}
	}
	if len(ids) > 0 && *failed {
		return &usageError{cmd: "retry", msg: "give image IDs or --failed, not both"}
	}
	cfg, err := c.loadConfig("retry", *cfgPath)
	if err != nil {
		return err
	}
	queued, err := agent.Retry(ctx, cfg, ids, *failed)
	if err != nil {
		return fmt.Errorf("retry: %w", err)
	}
	if len(queued) == 0 {
		fmt.Fprintln(c.stdout, "nothing to retry")
		return nil
	}
	fmt.Fprintf(c.stdout, "queued %d for retry: %s\n", len(queued), printable.String(strings.Join(queued, " ")))
	return nil
}
