package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/ingest/group"
	"github.com/gcingest/gcingest/state"
)

// inputError is a problem with the files themselves (gone, empty,
// unreadable): permanent, the image fails with this message.
type inputError struct{ msg string }

func (e *inputError) Error() string { return e.msg }

func inputErrorf(format string, args ...any) error {
	return &inputError{msg: fmt.Sprintf(format, args...)}
}

// importError is the server's own report that it could not import the
// image: permanent.
type importError struct{ msg string }

func (e *importError) Error() string { return e.msg }

// configError is a problem of the configuration or the account (an
// archive that cannot be found): never the image's fault, so retried.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// storeError is a failed state write: the pipeline stops taking work.
type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// waitError asks for the image to be looked at again at a given time,
// without an error (an import still running, a file still being written).
type waitError struct{ at time.Time }

func (e *waitError) Error() string { return "wait until " + e.at.String() }

// records reads and commits image records for the steps: each step's
// commit (save), the changes held for the next one (saveLater), and the
// watch a record belongs to. The steps share one, so that a change
// saveLater holds is committed by whichever step saves the image next.
type records struct {
	store   Store
	log     *slog.Logger
	watches map[string]Watch // by path; read-only after NewPipeline
	later   laterChanges     // changes saveLater holds for an image's next save
}

// save commits fn's change to img in one transaction, with any change
// saveLater held back for it, and refreshes img.
func (rs *records) save(img *state.Image, fn func(*state.Image)) error {
	out, err := rs.commit(img.ID, rs.later.take(img.ID), fn)
	if err != nil {
		return &storeError{err}
	}
	*img = out
	return nil
}

// commit applies later (a change saveLater held, or nil) and then fn to
// image id in one transaction.
func (rs *records) commit(id uint64, later, fn func(*state.Image)) (state.Image, error) {
	return rs.store.Update(id, func(r *state.Image) error {
		if later != nil {
			later(r)
		}
		fn(r)
		return nil
	})
}

// saveLater applies fn's change to img now and commits it with the
// image's next save, in the same transaction, for a change that nothing
// outside this process relies on before then: the hash and the plan,
// which the upload pk's commit carries (docs/PATTERNS.md, rule 1). A
// process that ends first drops it (process), so the next one starts from
// the state file, as a restart would.
func (rs *records) saveLater(img *state.Image, fn func(*state.Image)) {
	rs.later.add(img.ID, fn)
	fn(img)
}

// laterChanges holds, by image, the changes saveLater defers to the
// image's next save. Nothing else changes with them: they have their own
// lock.
type laterChanges struct {
	mu  sync.Mutex
	fns map[uint64]func(*state.Image)
}

// add holds fn for image id, after any change held for it already.
func (l *laterChanges) add(id uint64, fn func(*state.Image)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if prev := l.fns[id]; prev != nil {
		l.fns[id] = func(r *state.Image) { prev(r); fn(r) }
		return
	}
	if l.fns == nil {
		l.fns = map[uint64]func(*state.Image){}
	}
	l.fns[id] = fn
}

// take returns, and forgets, the change held for image id, or nil.
func (l *laterChanges) take(id uint64) func(*state.Image) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fn := l.fns[id]
	delete(l.fns, id)
	return fn
}

// process moves one image as far as it can go now: on an upload worker
// up to its import, in the confirmation lane (lane) from there on.
func (p *Pipeline) process(ctx context.Context, id uint64, lane bool) {
	defer func() { _ = p.later.take(id) }() // not committed: the next process hashes again
	img, err := p.store.Get(id)
	if err != nil {
		p.log.Error("read image record", "id", id, "err", err)
		return
	}
	for {
		if ctx.Err() != nil {
			return
		}
		if p.cfg.BeforeStep != nil {
			if err := p.cfg.BeforeStep(id, img.State); err != nil {
				return
			}
		}
		switch {
		case !lane && importingNow(&img):
			at := img.NextAttempt
			if img.State == state.Importing {
				at = p.confirm.firstLook(&img)
			}
			p.toLane(id, at)
			return
		case lane && !inLane(img.State, img.RetryFrom):
			p.enqueue(id, time.Time{}) // sent again, say: the upload workers' work
			return
		}
		var err error
		from := img.State
		ctx := withStep(ctx, id, img.State) // whose requests the client retries
		switch img.State {
		case state.Pending:
			err = p.up.stepHash(ctx, &img)
		case state.Uploading:
			var known bool
			if known, err = p.alreadyInArchive(ctx, &img); err == nil && !known {
				err = p.up.stepUpload(ctx, &img)
			}
		case state.Uploaded:
			err = p.stepItem(ctx, &img)
		case state.Attaching:
			err = p.stepReattach(ctx, &img)
		case state.Importing:
			err = p.confirm.stepPoll(ctx, &img)
		case state.Done, state.Duplicate:
			if img.ActionDone {
				return
			}
			err = p.stepAfter(ctx, &img)
		case state.Failed:
			if img.ActionDone {
				return
			}
			err = p.stepFailedFiles(ctx, &img)
		case state.Retrying:
			if img.NextAttempt.After(p.cfg.Now()) {
				p.requeue(&img, img.NextAttempt)
				return
			}
			err = p.save(&img, func(r *state.Image) {
				r.State, r.RetryFrom, r.NextAttempt = r.RetryFrom, "", time.Time{}
				r.WaitingFor, r.Until = "", time.Time{}
				if r.State == state.Importing {
					p.confirm.toImporting(r)
				}
				if r.State == "" {
					r.State = state.Pending
				}
			})
		case state.Finished:
			return
		default:
			err = fmt.Errorf("unknown state %q", img.State)
		}
		p.retries.clear(id) // the step has its answer, or gave up
		if answered(from, err) {
			p.health.ok(p.cfg.Now())
		}
		if err != nil {
			p.handle(ctx, &img, err)
			return
		}
	}
}

// answered reports whether a step of state st that ended with err got
// its answers from the server: the steps that talk to it, which make a
// request before they can succeed, or wait on an import.
func answered(st state.State, err error) bool {
	var we *waitError
	if err != nil && !errors.As(err, &we) {
		return false
	}
	switch st {
	case state.Uploading, state.Uploaded, state.Attaching, state.Importing:
		return true
	}
	return false
}

// handle decides what an error means for the image.
func (p *Pipeline) handle(ctx context.Context, img *state.Image, err error) {
	var we *waitError
	var se *storeError
	switch {
	case errors.As(err, &we):
		p.requeue(img, we.at)
		return
	case errors.As(err, &se) && errors.Is(se.err, state.ErrTransition):
		// A move the state machine does not allow: a bug of gcingest's,
		// not of the disk. Nothing was committed; this image alone is held
		// (loudly, looked at again hourly), the others go on.
		p.holdRefused(ctx, img, se.err)
		return
	case errors.As(err, &se):
		p.stop(se.err)
		return
	case ctx.Err() != nil:
		// Shutting down: the state is as last committed; the next run
		// continues from there.
		p.log.Debug("image parked", "id", img.ID, "state", img.State)
		return
	}
	log := p.log.With("id", img.ID, "key", img.Key, "state", img.State)
	// img may know more than the state file (upload pks and completions
	// not committed yet): keep them.
	uploads := cloneUploads(img.Uploads)
	from := img.State
	if from == state.Retrying {
		from = img.RetryFrom
	}
	if from == state.Failed || from == state.Done || from == state.Duplicate {
		// The image's fate is known; only its file action (or the abort
		// of its uploads) failed. Try that again later, never changing
		// the state: an imported image is never marked failed.
		next := p.cfg.Now().Add(p.cfg.backoff(img.Attempts + 1))
		log.Error("after-upload action failed; will try again", "err", err, "at", next.Format(time.RFC3339))
		if serr := p.save(img, func(r *state.Image) { r.Attempts++; r.LastError = err.Error() }); serr != nil {
			p.stop(serr) // PATTERNS.md, rule 4: never go on after a failed state write
			return
		}
		p.enqueue(img.ID, next)
		return
	}
	blockedSince := time.Time{}
	if isQuota(err) {
		blockedSince = cmp.Or(img.BlockedSince, p.cfg.Now().UTC())
		if p.cfg.Now().Sub(blockedSince) > p.cfg.QuotaTimeout {
			err = p.quotaFailure(img, err)
		}
	}
	if !permanent(err) && !healable(err) && img.Attempts+1 >= p.cfg.UnknownErrorAttempts {
		err = inputErrorf("gave up after %d attempts at an error that waiting has not healed "+
			"(not the network, the server, the account or the disk's space): %v; fix its cause, then gcingest retry %d",
			img.Attempts+1, err, img.ID)
	}
	if permanent(err) {
		log.Error("image failed", "err", err)
		p.confirm.polls.forget(img.ID)
		if serr := p.save(img, func(r *state.Image) {
			r.Uploads = uploads
			r.State, r.RetryFrom, r.LastError, r.NextAttempt = state.Failed, "", err.Error(), time.Time{}
			r.WaitingFor, r.Until = "", time.Time{}
		}); serr != nil {
			p.handle(ctx, img, serr)
			return
		}
		if cerr := p.stepFailedFiles(ctx, img); cerr != nil {
			p.handle(ctx, img, cerr)
		}
		return
	}
	next := p.cfg.Now().Add(p.retryWait(img.Attempts+1, err))
	if serr := p.save(img, func(r *state.Image) {
		r.Uploads = uploads
		r.State, r.RetryFrom = state.Retrying, from
		r.Attempts++
		r.LastError, r.NextAttempt = err.Error(), next
		r.WaitingFor, r.Until = waitingForRetry(err), next
		r.BlockedSince = blockedSince
	}); serr != nil {
		p.handle(ctx, img, serr)
		return
	}
	log.Warn("transient error; retrying", "err", err, "attempt", img.Attempts, "at", next.Format(time.RFC3339))
	p.requeue(img, next)
}

// quotaFailure is the permanent form of a quota refusal that outlasted
// QuotaTimeout, with the sizes that decide it.
func (p *Pipeline) quotaFailure(img *state.Image, err error) error {
	var total, done int64
	for _, u := range img.Uploads {
		total += u.Size
		if u.Completed {
			done += u.Size
		}
	}
	return inputErrorf("the server's upload limit has refused this image for %s (since %s): its uploads are %d bytes, "+
		"%d of them already sent; the account's quota (completed uploads not yet imported) cannot hold it; "+
		"ask the Grand Challenge admins for a larger limit, or split the image, then gcingest retry: %v",
		p.cfg.QuotaTimeout, img.BlockedSince.Format(time.RFC3339), total, done, err)
}

// isQuota reports the server's per-user byte quota: completed uploads not
// yet taken by an import count against it (grand-challenge.org
// app/grandchallenge/uploads/views.py generate_presigned_urls).
func isQuota(err error) bool { return gcapi.IsUploadLimit(err) }

// waitingForRetry says, for status, what a retrying image waits for.
func waitingForRetry(err error) string {
	var ce *configError
	switch {
	case isQuota(err):
		return "blocked: quota (the server's upload limit; resumes as imports take the account's uploads)"
	case errors.As(err, &ce):
		return "the configuration or the account to be fixed"
	}
	return "a retry after a transient error"
}

// healable reports whether err is of a kind that waiting heals: the
// network, the server (a 5xx, a 429, the token, the quota), the
// configuration or the account, and the local disk's passing states (full,
// busy, out of file handles, an I/O error, a permission the operator
// fixes). Any other error is retried at most UnknownErrorAttempts times,
// so an image never waits for ever on something nobody will fix.
func healable(err error) bool {
	var ge *gcapi.Error
	var ce *configError
	if errors.As(err, &ge) || errors.As(err, &ce) || gcapi.IsTransient(err) ||
		errors.Is(err, gcapi.ErrAmbiguous) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	for _, e := range []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT, syscall.EIO, syscall.EACCES, syscall.EPERM,
		syscall.EROFS, syscall.EAGAIN, syscall.EBUSY, syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM, syscall.ESTALE, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// permanent reports whether err will not go away by trying again: an error
// is transient only if waiting can heal it (docs/PATTERNS.md, liveness).
func permanent(err error) bool {
	var ie *inputError
	var gp *group.Problem
	var me *importError
	var ce *configError
	switch {
	case errors.As(err, &ie) || errors.As(err, &gp) || errors.As(err, &me):
		return true
	case errors.As(err, &ce):
		return false
	}
	var ge *gcapi.Error
	if !errors.As(err, &ge) {
		return false // network trouble, or something we do not know: keep trying
	}
	m := strings.ToLower(ge.Message)
	switch {
	case ge.StatusCode == http.StatusUnauthorized:
		return false // the token, not this image: fixed by the operator
	case isQuota(err):
		return false // the byte quota frees up as imports consume uploads
	case ge.StatusCode == http.StatusBadRequest && strings.Contains(m, "too many uploads"):
		return false
	case gcapi.IsTransient(err):
		return false // 408, 429, and S3's refusals of a part PUT that the next attempt heals
	}
	return ge.StatusCode >= 400 && ge.StatusCode < 500
}

func (rs *records) watchOf(img *state.Image) (Watch, error) {
	w, ok := rs.watches[img.Watch]
	if !ok {
		return Watch{}, inputErrorf("watch %s is no longer configured", img.Watch)
	}
	return w, nil
}

// refusedHolds is how many times an image whose steps the state machine
// refuses is looked at again before it fails (a day at the default
// RefusedHold): no image waits for ever, a bug of ours included.
const refusedHolds = 24

// holdRefused records, in the image's own state (a move to the same state
// is always allowed), that its last step was refused by the state
// machine, and looks at it again after RefusedHold; after refusedHolds
// such looks it fails, where failing is a move the table allows.
func (p *Pipeline) holdRefused(ctx context.Context, img *state.Image, refused error) {
	p.log.Error("state machine refused a move; holding the image", "id", img.ID, "key", img.Key, "err", refused)
	// Failing is itself a move: never try it again when it was the move
	// refused, or the two would call each other.
	var te *state.TransitionError
	failing := errors.As(refused, &te) && te.To == state.Failed
	if img.Attempts+1 >= refusedHolds && !failing && state.Allowed(img.State, state.Failed) {
		p.handle(ctx, img, inputErrorf("internal error, %d times: %v; nothing of that step was recorded (please report this; gcingest retry %d starts the image over)",
			refusedHolds, refused, img.ID))
		return
	}
	msg := fmt.Sprintf("internal error: %v; nothing of that step was recorded, and the image is tried again in %s (please report this, with gcingest status %d)",
		refused, p.cfg.RefusedHold, img.ID)
	if err := p.save(img, func(r *state.Image) { r.LastError, r.Attempts = msg, r.Attempts+1 }); err != nil {
		var se *storeError
		if errors.As(err, &se) && !errors.Is(se.err, state.ErrTransition) {
			p.stop(se.err)
			return
		}
	}
	p.enqueue(img.ID, p.cfg.Now().Add(p.cfg.RefusedHold))
}
