package agent

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/gcingest/gcingest/ingest"
	"github.com/gcingest/gcingest/ingest/group"
	"github.com/gcingest/gcingest/watcher"
)

// submitRetry is how long ready images wait before they are offered again to
// a pipeline that could not record them (a full disk under the state file).
const submitRetry = 10 * time.Second

// runWatch feeds one folder's notices to its grouper and the ready groups to
// the pipeline, until ctx is done. This goroutine owns the grouper.
// setUnknown is told how many files of unknown type the folder holds after
// each look.
func runWatch(ctx context.Context, w ingest.Watch, p *ingest.Pipeline, log *slog.Logger, setUnknown func(int)) error {
	wt, err := watcher.New(watcher.Options{Root: w.Path, Rescan: w.Rescan, Poll: w.Poll, Logger: log})
	if err != nil {
		return err
	}
	batches := make(chan watcher.Batch, 8)
	wctx, wcancel := context.WithCancel(ctx)
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		if err := wt.Run(wctx, batches); err != nil {
			log.Error("watcher stopped", "err", err)
		}
	}()
	defer func() { wcancel(); <-wdone }()

	ingest.LogDeidentification(log, w)
	g := group.NewGrouper(w.Spec, log)
	var unsubmitted []ingest.Group
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case b := <-batches:
			now := time.Now()
			if b.FullScan {
				g.BeginScan()
			}
			for _, ev := range b.Events {
				g.Observe(ev.Path, ev.Info, now)
			}
			if b.FullScan {
				g.EndScan(now)
				log.Debug("rescan done", "files", g.Len())
			}
		case <-timer.C:
		}
		unsubmitted = append(unsubmitted, g.Ready(time.Now())...)
		setUnknown(g.Unknown())
		if len(unsubmitted) > 0 {
			// Recorded together, in one commit: a backlog found at start
			// costs one fsync, not one per image.
			var again []ingest.Group
			var stopErr error
			for i, err := range p.SubmitAll(ctx, unsubmitted) {
				switch {
				case err == nil:
				case ctx.Err() != nil:
					return nil
				case errors.Is(err, ingest.ErrStopped):
					again, stopErr = append(again, unsubmitted[i]), err
				default:
					// Refused for what it is: waiting will not change that.
					log.Error("image not accepted", "key", unsubmitted[i].Key, "err", err)
				}
			}
			if len(again) > 0 {
				log.Error("cannot record ready images; they will be offered again", "images", len(again), "first", again[0].Key, "retry_in", submitRetry, "err", stopErr)
			}
			unsubmitted = again
		}
		d := time.Hour
		if wake := g.NextWake(); !wake.IsZero() {
			d = max(time.Until(wake), 10*time.Millisecond)
		}
		if len(unsubmitted) > 0 {
			d = min(d, submitRetry)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(d)
	}
}
