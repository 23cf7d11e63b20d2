package main

import (
	"errors"
	"time"

	"context"
	"fmt"
	"github.com/gcingest/gcingest/agent"
	"github.com/gcingest/gcingest/state"
	"log/slog"

	"github.com/gcingest/gcingest/ingest/group"
	"github.com/gcingest/gcingest/printable"
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
	log := newLogger(cfg, c.stderr, "")
	st, err := state.Open(cfg.State.Path, state.Options{ReadOnly: true, Timeout: 200 * time.Millisecond})
	switch {
	case err == nil:
		defer st.Close()
	case errors.Is(err, state.ErrLocked):
		fmt.Fprintln(c.stdout, "(the agent is running: images it already recorded are not marked)")
		st = nil
	default:
		st = nil // no state file yet: nothing was recorded
	}
	for i, w := range agent.Watches(cfg) {
		if i > 0 {
			fmt.Fprintln(c.stdout)
		}
		rep, err := group.Plan(ctx, w.Grouping(), log.With(slog.String("watch", w.Path)))
		if err != nil {
			// Errors here and below may quote names found in the folder.
			return fmt.Errorf("plan watch[%d] %s: %w", i, printable.String(w.Path), printable.Error(err))
		}
		// A folder item run would refuse is not ready: run's own rules,
		// the server asked when a token is at hand (cmd_check.go).
		if _, err := checkPlanFolders(ctx, c.planChecker(cfg, log), w, &rep); err != nil {
			fmt.Fprintf(c.stdout, "(some folder items not checked against the server: %v)\n", printable.Error(err))
		}
		if st != nil {
			if err := markRecorded(&rep, w.Path, st); err != nil {
				return printable.Error(err)
			}
		}
		if err := rep.WriteText(c.stdout); err != nil {
			return err
		}
	}
	return nil
}

// markRecorded marks the ready entries that the state file already holds
// with the same files (relative path, size, modification time), which the
// agent would skip, with what became of them.
func markRecorded(rep *group.PlanReport, watch string, st *state.Store) error {
	for i, e := range rep.Entries {
		if e.State != group.PlanReady {
			continue
		}
		imgs, err := st.ByKey(watch, e.Key)
		if err != nil {
			return fmt.Errorf("read state file: %w", err)
		}
		for _, im := range imgs {
			if sameFiles(im.Files, e.Files) {
				e.State = group.PlanRecorded
				e.Reason = fmt.Sprintf("image %d is %s", im.ID, im.State)
				if im.ItemPK != "" {
					e.Reason += ", item " + im.ItemPK
				}
				rep.Entries[i] = e
			}
		}
	}
	return nil
}

func sameFiles(rec []state.File, now []group.File) bool {
	if len(rec) != len(now) {
		return false
	}
	byRel := make(map[string]state.File, len(rec))
	for _, f := range rec {
		byRel[f.Rel] = f
	}
	for _, f := range now {
		r, ok := byRel[f.Rel]
		if !ok || r.Size != f.Size || !r.ModTime.Equal(f.ModTime) {
			return false
		}
	}
	return true
}
