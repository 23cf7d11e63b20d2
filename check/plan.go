package check

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	"github.com/gcingest/gcingest/agent"
	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/ingest"
	"github.com/gcingest/gcingest/ingest/group"
	"github.com/gcingest/gcingest/printable"
	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/watch"
)

// PlanOptions configure Plan.
type PlanOptions struct {
	Config *config.Config
	// Getenv reads the environment, for the token. With a token the folder
	// items are checked against the server too; without one plan works
	// offline, with the rules that need no server.
	Getenv func(string) string
	// Out gets the report of each watch.
	Out io.Writer
	// Logger shows grouping problems.
	Logger *slog.Logger
	// Version names this binary in the User-Agent.
	Version string
}

// Plan scans every drop folder of opts.Config once and writes how its
// files would be grouped into images, which are ready and which wait, and
// why. A folder item run would refuse is marked PlanFails. When no agent
// runs, images the state file holds already with the same files are marked
// recorded, with their state and item. It uploads nothing.
func Plan(ctx context.Context, opts PlanOptions) error {
	cfg, log, out := opts.Config, opts.Logger, opts.Out
	st, err := state.Open(cfg.State.Path, state.Options{ReadOnly: true, Timeout: 200 * time.Millisecond})
	switch {
	case err == nil:
		defer st.Close()
	case errors.Is(err, state.ErrLocked):
		fmt.Fprintln(out, "(the agent is running: images it already recorded are not marked)")
		st = nil
	default:
		st = nil // no state file yet: nothing was recorded
	}
	for i, w := range agent.Watches(cfg) {
		if i > 0 {
			fmt.Fprintln(out)
		}
		rep, err := group.Plan(ctx, w.Spec, log.With(slog.String("watch", w.Path)))
		if err != nil {
			// Errors here and below may quote names found in the folder.
			return fmt.Errorf("plan watch[%d] %s: %w", i, printable.String(w.Path), printable.Error(err))
		}
		// A folder item run would refuse is not ready: run's own rules,
		// the server asked when a token is at hand.
		if _, err := checkPlanFolders(ctx, planChecker(opts), w, &rep); err != nil {
			fmt.Fprintf(out, "(some folder items not checked against the server: %v)\n", printable.Error(err))
		}
		if st != nil {
			if err := markRecorded(&rep, w.Path, st); err != nil {
				return printable.Error(err)
			}
		}
		if err := writePlan(out, rep); err != nil {
			return err
		}
	}
	return nil
}

// writePlan writes rep as group.PlanReport.WriteText does, under a heading
// that counts the folder items run would refuse (PlanFails) too: the
// grouper knows nothing of them, so its heading leaves them out, and its
// counts would not add up to the rows.
func writePlan(out io.Writer, rep group.PlanReport) error {
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		return err
	}
	_, table, _ := strings.Cut(buf.String(), "\n")
	n := map[string]int{}
	for _, e := range rep.Entries {
		n[e.State]++
	}
	recorded := ""
	if n[group.PlanRecorded] > 0 {
		recorded = fmt.Sprintf(", %d already recorded", n[group.PlanRecorded])
	}
	if _, err := fmt.Fprintf(out, "%s (group = %s): %d ready, %d %s, %d waiting, %d ignored%s\n%s",
		printable.String(rep.Watch), printable.String(string(rep.Group)), n[group.PlanReady], n[PlanFails], PlanFails,
		n[group.PlanWaiting], n[group.PlanIgnored], recorded, table); err != nil {
		return fmt.Errorf("write plan: %w", err)
	}
	return nil
}

// planChecker is the folder checker of Plan: nil without a token, for plan
// works offline too (then only the rules that need no server apply).
func planChecker(opts PlanOptions) *ingest.FolderChecker {
	tok, _, err := opts.Config.Token(opts.Getenv)
	if err != nil {
		return nil
	}
	cl, err := agent.NewClient(opts.Config, tok, opts.Version, opts.Logger, gcapi.WithRetry(gcapi.RetryPolicy{MaxAttempts: 2, MaxDelay: time.Second}))
	if err != nil {
		return nil
	}
	return ingest.NewFolderChecker(cl, opts.Logger)
}

// PlanFails marks, in a plan report, a folder item that run would refuse:
// it is not ready, whatever its files' age.
const PlanFails = "fails"

// checkPlanFolders applies run's rules (ingest.FolderChecker) to the ready
// folder items of rep and marks each that run would refuse with PlanFails
// and the reason. fc may be nil (no server to ask): then only the rules
// that need no server count. It returns the items marked, and the first
// error that was not the folder's (the network): those items stay ready.
func checkPlanFolders(ctx context.Context, fc *ingest.FolderChecker, w ingest.Watch, rep *group.PlanReport) ([]group.PlanEntry, error) {
	var failed []group.PlanEntry
	var firstErr error
	for i, e := range rep.Entries {
		if e.State != group.PlanReady || e.Kind != group.KindFolder {
			continue
		}
		if r, ok := strings.CutPrefix(e.Reason, "will fail: "); ok {
			e.State, e.Reason = PlanFails, r
		} else if fc != nil {
			err := fc.Check(ctx, w, e.Key, e.Files)
			switch {
			case err == nil:
				continue
			case ingest.IsFolderProblem(err):
				e.State, e.Reason = PlanFails, err.Error()
			default:
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
		} else {
			continue
		}
		rep.Entries[i] = e
		failed = append(failed, e)
	}
	return failed, firstErr
}

// maxFolderFails bounds the folder lines check prints per watch.
const maxFolderFails = 20

// checkFolderItems runs every folder rule of run on the folder items ready
// in watch i now, and prints a FAIL per item run would refuse.
func checkFolderItems(ctx context.Context, k *checker, fc *ingest.FolderChecker, i int, w ingest.Watch, log *slog.Logger) {
	if w.Group != watch.GroupFolder {
		return
	}
	key := fmt.Sprintf("watch[%d]", i)
	rep, err := group.Plan(ctx, w.Spec, slog.New(slog.DiscardHandler))
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission):
		return // the start-up's check of the folder failed it already
	case err != nil:
		k.fail("%s.path: %v", key, err)
		return
	}
	ready := 0
	for _, e := range rep.Entries {
		if e.State == group.PlanReady && e.Kind == group.KindFolder {
			ready++
		}
	}
	failed, err := checkPlanFolders(ctx, fc, w, &rep)
	for j, e := range failed {
		if j == maxFolderFails {
			k.fail("%s: %d more folder items run would refuse (gcingest plan lists them)", key, len(failed)-maxFolderFails)
			break
		}
		k.fail("%s folder %s: %s", key, e.Key, e.Reason)
	}
	switch {
	case err != nil:
		k.warn("%s: folder items not all checked against the server: %v", key, err)
	case len(failed) == 0:
		k.ok("%s: %s ready now, each passes run's folder rules", key, plural(ready, "folder item", "folder items"))
	}
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
