package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/gcingest/gcingest/agent"
	"github.com/gcingest/gcingest/printable"
	"github.com/gcingest/gcingest/status"
)

const helpStatus = `Prints the images still in progress or needing attention (every state but
finished, duplicate, superseded and dismissed), each error in full with its
cause first, then the counts by state of every image recorded. --all lists
every image; --state lists those in the states named. With an image ID (the
first column) it prints that image's whole story: its files, uploads, item,
where its files went, and every error with its time.

While the agent runs it asks the agent's status endpoint ([status] listen);
otherwise it opens the state file read-only. --json prints the same report
as JSON (the /status document) for scripts.

States: pending, uploading, uploaded, attaching, importing, done, finished;
off the main path retrying (tries again by itself), failed (needs gcingest
retry after the cause is fixed, or gcingest forget), duplicate (already in
the archive), superseded (it had failed; a newer image of its folder or file
landed), dismissed (it had failed; gcingest forget dismissed it).
`

func (c *cli) cmdStatus(ctx context.Context, args []string) error {
	flags := newFlagSet("status")
	cfgPath := configFlag(flags)
	asJSON := flags.Bool("json", false, "print the report as JSON")
	all := flags.Bool("all", false, "list every image, finished ones too")
	states := flags.String("state", "", "list the images in these `states` (comma-separated)")
	pos, err := c.parseFlags(flags, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return &usageError{cmd: "status", msg: "status takes at most one image ID"}
	}
	q, err := status.ParseQuery(url.Values{"state": {*states}})
	if err != nil {
		return &usageError{cmd: "status", msg: "--state: " + err.Error()}
	}
	q.All = *all
	if len(pos) == 1 {
		if *all || *states != "" {
			return &usageError{cmd: "status", msg: "an image ID shows one image; --all and --state do not go with it"}
		}
		if _, err := strconv.ParseUint(pos[0], 10, 64); err != nil {
			return &usageError{cmd: "status", msg: fmt.Sprintf("image ID %q is not a number; the IDs are in the first column of gcingest status", pos[0])}
		}
		q.ID = pos[0]
	}
	cfg, err := c.loadConfig("status", *cfgPath)
	if err != nil {
		return err
	}
	rep, err := fetchStatus(ctx, cfg.Status.Listen, cfg.State.Path, q)
	if err != nil && errors.Is(err, fs.ErrNotExist) && !exists(cfg.State.Path) {
		// Before the first run there is no state file: nothing to report,
		// which is not an error.
		if *asJSON {
			rep = &status.Report{Version: versionString(), Images: []status.Image{}, Counts: map[string]int{}, Query: q}
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
	// The report's names and messages are escaped where they are written
	// (WriteTable, WriteDetail); --json above keeps them exact.
	if rep.Started.IsZero() {
		fmt.Fprintf(c.stdout, "agent not running; from the state file %s\n\n", printable.String(cfg.State.Path))
	} else {
		fmt.Fprintf(c.stdout, "agent %s running since %s\n\n", printable.String(rep.Version), rep.Started.Local().Format(time.DateTime))
	}
	if q.ID != "" {
		if len(rep.Images) == 0 {
			return fmt.Errorf("status: no image with ID %s in %s", q.ID, cfg.State.Path)
		}
		return rep.WriteDetail(c.stdout, time.Now())
	}
	return rep.WriteTable(c.stdout, time.Now())
}

// fetchStatus asks the running agent, else reads the state file.
func fetchStatus(ctx context.Context, listen, statePath string, q status.Query) (*status.Report, error) {
	if listen != "" {
		rep, err := status.Fetch(ctx, listen, q)
		if err == nil {
			return rep, nil
		}
		if !errors.Is(err, status.ErrNotRunning) {
			return nil, err
		}
	}
	rep, err := agent.StatusFromState(statePath, q, versionString())
	if err != nil {
		return nil, fmt.Errorf("status: %w", printable.Error(err))
	}
	return rep, nil
}

// exists reports whether p exists; an error other than "does not exist"
// counts as existing, so that it is reported rather than hidden.
func exists(p string) bool {
	_, err := os.Stat(p)
	return !errors.Is(err, fs.ErrNotExist)
}
