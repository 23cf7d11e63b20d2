package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/gcingest/gcingest/status"
)

const helpStatus = `Prints every image the agent knows: its state, files, upload progress,
archive item, next attempt and last error, then the counts by state.

While the agent runs it asks the agent's status endpoint ([status] listen);
otherwise it opens the state file read-only. --json prints the same report
as JSON (the /status document) for scripts.

States: pending, uploading, uploaded, item, attaching, importing, done,
finished; off the main path retrying (tries again by itself), failed (needs
gcingest retry after the cause is fixed), duplicate (already in the archive).
`

func (c *cli) cmdStatus(ctx context.Context, args []string) error {
	flags := newFlagSet("status")
	cfgPath := configFlag(flags)
	asJSON := flags.Bool("json", false, "print the report as JSON")
	pos, err := c.parseFlags(flags, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &usageError{cmd: "status", msg: "status takes no arguments"}
	}
	cfg, err := c.loadConfig("status", *cfgPath)
	if err != nil {
		return err
	}
	rep, err := fetchStatus(ctx, cfg.Status.Listen, cfg.State.Path)
	if err != nil && errors.Is(err, fs.ErrNotExist) && !exists(cfg.State.Path) {
		// Before the first run there is no state file: nothing to report,
		// which is not an error.
		if *asJSON {
			rep = &status.Report{Version: versionString(), Images: []status.Image{}}
			rep.CountStates()
		} else {
			fmt.Fprintf(c.stdout, "no images yet: the agent has not run with this config (no state file %s)\n", cfg.State.Path)
			return nil
		}
	} else if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	if rep.Started.IsZero() {
		fmt.Fprintf(c.stdout, "agent not running; from the state file %s\n\n", cfg.State.Path)
	} else {
		fmt.Fprintf(c.stdout, "agent %s running since %s\n\n", rep.Version, rep.Started.Local().Format(time.DateTime))
	}
	return rep.WriteTable(c.stdout, time.Now())
}

// fetchStatus asks the running agent, else reads the state file.
func fetchStatus(ctx context.Context, listen, statePath string) (*status.Report, error) {
	if listen != "" {
		rep, err := status.Fetch(ctx, listen)
		if err == nil {
			return rep, nil
		}
		if !errors.Is(err, status.ErrNotRunning) {
			return nil, err
		}
	}
	rep, err := statusFromState(statePath)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	return rep, nil
}

// exists reports whether p exists; an error other than "does not exist"
// counts as existing, so that it is reported rather than hidden.
func exists(p string) bool {
	_, err := os.Stat(p)
	return !errors.Is(err, fs.ErrNotExist)
}
