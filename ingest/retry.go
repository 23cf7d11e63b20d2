package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/gcingest/gcingest/state"
)

// RetryStore is what retrying needs from the state file; *state.Store has it.
type RetryStore interface {
	Get(id uint64) (state.Image, error)
	Update(id uint64, fn func(*state.Image) error) (state.Image, error)
	List(states ...state.State) ([]state.Image, error)
}

// Retry sends the given failed or waiting items through the pipeline
// again, on the state file alone: files moved to failed_dir go back where
// they were found, and a failed item starts over from pending (keeping its
// item pk, if any); a retrying one is tried again now from where it was,
// and an importing one looks at the server's truth now instead of at its
// deadline.
// It returns the IDs it changed. A running pipeline queues them
// (Pipeline.Retry); while no agent runs, the next run finds them
// unfinished. log may be nil.
func Retry(ctx context.Context, store RetryStore, ids []uint64, log *slog.Logger) ([]uint64, error) {
	return retry(ctx, store, ids, nil, log)
}

// RetryFailed retries every failed item (see Retry).
func RetryFailed(ctx context.Context, store RetryStore, log *slog.Logger) ([]uint64, error) {
	ids, err := failedIDs(store)
	if err != nil {
		return nil, err
	}
	_, err = retry(ctx, store, ids, nil, log)
	return ids, err
}

func failedIDs(store RetryStore) ([]uint64, error) {
	imgs, err := store.List(state.Failed)
	if err != nil {
		return nil, err
	}
	var ids []uint64
	for _, img := range imgs {
		ids = append(ids, img.ID)
	}
	return ids, nil
}

// Retry is the package's Retry on the pipeline's store, refusing items a
// worker is on, and queueing what it changed. It works whether or not Run
// is running.
func (p *Pipeline) Retry(ctx context.Context, ids []uint64) error {
	done, err := retry(ctx, p.store, ids, p.busy, p.log)
	for _, id := range done {
		p.enqueue(id, time.Time{})
	}
	return err
}

// RetryFailed retries every failed item. Retried items are not marked
// recovering: a retried item starts over from pending with fresh intents,
// and one whose retry fails is never queued, so marking it would hold up
// all new work for good.
func (p *Pipeline) RetryFailed(ctx context.Context) ([]uint64, error) {
	ids, err := failedIDs(p.store)
	if err != nil {
		return nil, err
	}
	return ids, p.Retry(ctx, ids)
}

func (p *Pipeline) busy(id uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.active[id]
	return ok
}

func retry(ctx context.Context, store RetryStore, ids []uint64, busy func(uint64) bool, log *slog.Logger) ([]uint64, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var done []uint64
	var errs []error
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		if err := retryOne(store, id, busy, log); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, id)
	}
	return done, errors.Join(errs...)
}

func retryOne(store RetryStore, id uint64, busy func(uint64) bool, log *slog.Logger) error {
	img, err := store.Get(id)
	if err != nil {
		return err
	}
	if (img.State.Terminal() && img.State != state.Failed) || img.State == state.Done {
		// Landed, superseded or dismissed by the operator: nothing to retry.
		return fmt.Errorf("retry image %d: it is %s; nothing to retry", id, img.State)
	}
	if busy != nil && busy(id) {
		return fmt.Errorf("retry image %d: it is being worked on", id)
	}
	if img.State != state.Failed && img.State != state.Retrying {
		// Waiting (an import, a deadline): cut the wait short. The next
		// look goes back to the server's truth at once (deadline in
		// poll.go) and resumes, sends again or fails with the reason.
		// Nothing recorded is forgotten, so nothing is sent twice.
		_, err = store.Update(id, func(r *state.Image) error {
			if r.State != img.State {
				return fmt.Errorf("retry image %d: it is %s now", id, r.State)
			}
			r.NextAttempt = time.Time{}
			if r.State == state.Importing {
				r.Until = time.Unix(1, 0).UTC()
			}
			return nil
		})
		if err != nil {
			return err
		}
		log.Info("image looked at again now", "id", id, "key", img.Key, "state", img.State)
		return nil
	}
	if img.State == state.Retrying {
		// Only the wait is cut short. Its progress (upload pks and parts,
		// item pk, PATCH sent, attempts) is kept: starting it over would
		// leave its multipart upload open and could send its PATCH again.
		_, err = store.Update(id, func(r *state.Image) error {
			if r.State != state.Retrying {
				return fmt.Errorf("retry image %d: it is %s now", id, r.State)
			}
			r.NextAttempt = time.Time{}
			return nil
		})
		if err != nil {
			return err
		}
		log.Info("image tried again now", "id", id, "key", img.Key)
		return nil
	}
	if !img.ActionDone {
		// Starting over forgets its uploads; one still open would stay
		// open for good.
		return fmt.Errorf("retry image %d: its open uploads are not aborted yet; the running agent keeps trying "+
			"(start it if it is stopped), retry once it has", id)
	}
	var removed []string
	if img.MovedTo != "" {
		if removed, err = restoreFailed(&img); err != nil {
			return fmt.Errorf("retry image %d: %w", id, err)
		}
	}
	_, err = store.Update(id, func(r *state.Image) error {
		// Files the operator removed from failed_dir: the image is sent
		// as it is now.
		r.Files = slices.DeleteFunc(r.Files, func(f state.File) bool { return slices.Contains(removed, f.Rel) })
		r.State, r.RetryFrom = state.Pending, ""
		r.Attempts, r.LastError, r.NextAttempt = 0, "", time.Time{}
		r.ActionDone, r.MovedTo, r.DoneTarget, r.EmptyItem = false, "", "", false
		r.Uploads, r.Values = nil, nil
		r.PatchSentAt, r.SessionPK = time.Time{}, ""
		r.WaitingFor, r.Until, r.Resent = "", time.Time{}, 0
		return nil
	})
	if err != nil {
		return err
	}
	log.Info("image queued again", "id", id, "key", img.Key)
	return nil
}
