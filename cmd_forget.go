package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/gcingest/gcingest/agent"
	"github.com/gcingest/gcingest/printable"
)

const helpForget = `Dismisses failed images for good: each image with the given ID (the first
column of gcingest status) moves from failed to dismissed. It no longer
counts as failed (gcingest_images{state="failed"} in /metrics drops, and an
alert on it clears) and gcingest status no longer lists it; gcingest status
ID and --all still tell its story. Only a failed image is dismissed: any
other is refused, with its state named, and the command exits 1.

Its files stay where they went (failed_dir). The same files dropped again
are not sent, as for any image recorded; change them (or touch them) to
send them as a new image. gcingest retry --drop ID... does the same as
forget.

The running agent takes the request through its status endpoint.
`

func (c *cli) cmdForget(ctx context.Context, args []string) error {
	fs := newFlagSet("forget")
	cfgPath := configFlag(fs)
	ids, err := c.parseFlags(fs, args)
	if err != nil {
		return err
	}
	return c.forget(ctx, "forget", *cfgPath, ids)
}

// forget dismisses the failed images with ids through the running agent's
// status endpoint, or in the state file when no agent answers (retry does
// the same); cmd is the command the user typed, for its messages.
func (c *cli) forget(ctx context.Context, cmd, cfgPath string, ids []string) error {
	if len(ids) == 0 {
		return &usageError{cmd: cmd, msg: cmd + " needs the IDs of the failed images to dismiss"}
	}
	for _, id := range ids {
		if _, err := strconv.ParseUint(id, 10, 64); err != nil {
			return &usageError{cmd: cmd, msg: fmt.Sprintf("image ID %q is not a number; the IDs are in the first column of gcingest status", id)}
		}
	}
	cfg, err := c.loadConfig(cmd, cfgPath)
	if err != nil {
		return err
	}
	forgotten, err := agent.Forget(ctx, cfg, ids)
	if len(forgotten) > 0 {
		fmt.Fprintf(c.stdout, "dismissed %d: %s (gcingest status ID still tells each one's story)\n",
			len(forgotten), printable.String(strings.Join(forgotten, " ")))
	}
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	return nil
}
