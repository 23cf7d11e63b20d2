package ingest

import (
	"context"
	"fmt"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/state"
)

// stepPoll looks once at an importing item: done when it shows every
// value; otherwise the next look is scheduled.
func (p *Pipeline) stepPoll(ctx context.Context, img *state.Image) error {
	_, done, err := p.look(ctx, img)
	if err != nil || done {
		return err
	}
	return p.pollMore(ctx, img)
}

// look gets the item and confirms the values it shows (confirmValues); done
// says every value is there and the item was finished.
func (p *Pipeline) look(ctx context.Context, img *state.Image) (it *gcapi.ArchiveItem, done bool, err error) {
	w, err := p.watchOf(img)
	if err != nil {
		return nil, false, err
	}
	it, err = p.api.ArchiveItem(ctx, img.ItemPK)
	if err != nil {
		return nil, false, fmt.Errorf("get archive item %s: %w", img.ItemPK, err)
	}
	done, err = p.confirmValues(ctx, img, w, it)
	return it, done, err
}

// pollMore checks, now and then, whether an import of the image's uploads
// failed, notes an import that takes very long, and schedules the next look.
func (p *Pipeline) pollMore(ctx context.Context, img *state.Image) error {
	p.mu.Lock()
	n := p.polls[img.ID]
	p.polls[img.ID] = n + 1
	p.mu.Unlock()
	// Listing sessions is costly (all of them, every page): only once an
	// import takes a while, and then every third look.
	if img.SessionPK != "" || (n >= 2 && n%3 == 2) {
		se, err := p.findSession(ctx, img)
		if err != nil {
			return err
		}
		if se != nil {
			if se.Status == gcapi.SessionFailed {
				return &importError{msg: "the server could not import the image: " + se.ErrorMessage}
			}
			if img.SessionPK == "" {
				if err := p.save(img, func(r *state.Image) { r.SessionPK = se.PK }); err != nil {
					return err
				}
			}
		}
	}
	now := p.cfg.Now()
	if now.Sub(img.PatchSentAt) > p.cfg.ImportTimeout && img.LastError == "" {
		msg := fmt.Sprintf("the import has not finished %s after the uploads were attached; still waiting", p.cfg.ImportTimeout)
		p.log.Warn(msg, "id", img.ID, "item", img.ItemPK)
		if err := p.save(img, func(r *state.Image) { r.LastError = msg }); err != nil {
			return err
		}
	}
	return &waitError{at: now.Add(p.pollWait(n))}
}

// markDone records the imported image. The after-upload action comes
// first and is idempotent (a moved file is found at its target, a deleted
// one is gone), so done, the action and finished are one commit; if the
// process dies between the action and the commit, the next run finds the
// value on the item again and finishes the job.
func (p *Pipeline) markDone(ctx context.Context, img *state.Image, w Watch, imageURL string) error {
	p.mu.Lock()
	delete(p.polls, img.ID)
	delete(p.created, img.ID)
	p.mu.Unlock()
	movedTo, actErr := afterAction(ctx, img, w)
	if actErr == nil {
		p.removeSpools(img)
	}
	values := state.CloneValues(img.Values) // confirmations known only in memory so far
	err := p.save(img, func(r *state.Image) {
		if values != nil {
			r.Values = values
		}
		r.State, r.ImageURL, r.ImagePK = state.Done, imageURL, lastSegment(imageURL)
		r.LastError, r.Attempts = "", 0
		if actErr == nil {
			r.State, r.ActionDone, r.MovedTo, r.Finished = state.Finished, true, movedTo, p.cfg.Now().UTC()
		}
	})
	if err != nil {
		return err
	}
	// One line per finished image says where its files went.
	p.log.Info("image imported", "id", img.ID, "key", img.Key, "item", img.ItemPK, "image", img.ImagePK, "files", filesWent(w, movedTo, actErr))
	if p.cfg.Progress != nil {
		p.cfg.Progress(ProgressEvent{ID: img.ID, Key: img.Key, Imported: true})
	}
	return actErr
}

// filesWent says where an imported image's files are now, for its log line.
func filesWent(w Watch, movedTo string, actErr error) string {
	switch {
	case actErr != nil:
		return "still in " + w.Path + " (the after-upload action failed and is retried)"
	case movedTo != "":
		return "moved to " + movedTo
	case w.AfterUpload == "delete":
		return "deleted"
	}
	return "kept in " + w.Path
}
