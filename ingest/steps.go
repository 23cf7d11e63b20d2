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

// steps does to an image what its state asks, one step at a time
// (process), and decides what a step's error means for it (handle): the
// item state machine. Hashing and uploading are its uploader's
// (upload.go), the import's confirmation its confirmer's (poll.go); it
// finds the item and attaches the values (item.go, attach.go) and keeps,
// moves or deletes the files after (after.go). It reaches the Pipeline
// only through scheduler.
type steps struct {
	*records
	cfg     PipelineConfig
	api     API
	server  *serverCache // what the pipeline knows of the server
	held    *heldFiles   // the files of images that landed, by item
	plan    *planner     // what values and uploads an item gets
	up      *uploader    // pending → uploaded
	confirm *confirmer   // importing → done
	retries *clientRetries
	health  serverHealth // when a step last succeeded (pacing.go)
	sched   scheduler
	// started is when Run began (uploads and items created before it may
	// be ours and unrecorded); Run sets it before it starts a worker.
	started time.Time
}

// scheduler is what the steps ask of the Pipeline: an image queued for
// the upload workers or the confirmation lane, and work stopped when the
// state file cannot be written.
type scheduler interface {
	enqueue(id uint64, at time.Time)
	begun(id uint64) // its step is about to run: an image found unfinished at start no longer holds new work
	toLane(id uint64, at time.Time)
	stop(err error)
}

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
func (s *steps) process(ctx context.Context, id uint64, lane bool) {
	defer func() { _ = s.later.take(id) }() // not committed: the next process hashes again
	img, err := s.store.Get(id)
	if err != nil {
		s.log.Error("read image record", "id", id, "err", err)
		return
	}
	for {
		if ctx.Err() != nil {
			return
		}
		if s.cfg.BeforeStep != nil {
			if err := s.cfg.BeforeStep(id, img.State); err != nil {
				return
			}
		}
		s.sched.begun(id)
		switch {
		case !lane && importingNow(&img):
			at := img.NextAttempt
			if img.State == state.Importing {
				at = s.confirm.firstLook(&img)
			}
			s.sched.toLane(id, at)
			return
		case lane && !inLane(img.State, img.RetryFrom):
			s.sched.enqueue(id, time.Time{}) // sent again, say: the upload workers' work
			return
		}
		var err error
		from := img.State
		ctx := withStep(ctx, id, img.State) // whose requests the client retries
		switch img.State {
		case state.Pending:
			err = s.up.stepHash(ctx, &img)
		case state.Uploading:
			var known bool
			if known, err = s.alreadyInArchive(ctx, &img); err == nil && !known {
				err = s.up.stepUpload(ctx, &img)
			}
		case state.Uploaded:
			err = s.stepItem(ctx, &img)
		case state.Attaching:
			err = s.stepReattach(ctx, &img)
		case state.Importing:
			err = s.confirm.stepPoll(ctx, &img)
		case state.Done, state.Duplicate:
			if img.ActionDone {
				return
			}
			err = s.stepAfter(ctx, &img)
		case state.Failed:
			if img.ActionDone {
				return
			}
			err = s.stepFailedFiles(ctx, &img)
		case state.Retrying:
			if img.NextAttempt.After(s.cfg.Now()) {
				s.requeue(&img, img.NextAttempt)
				return
			}
			err = s.save(&img, func(r *state.Image) {
				r.State, r.RetryFrom, r.NextAttempt = r.RetryFrom, "", time.Time{}
				r.WaitingFor, r.Until = "", time.Time{}
				if r.State == state.Importing {
					s.confirm.toImporting(r)
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
		s.retries.clear(id) // the step has its answer, or gave up
		if answered(from, err) {
			s.health.ok(s.cfg.Now())
		}
		if err != nil {
			s.handle(ctx, &img, err)
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
func (s *steps) handle(ctx context.Context, img *state.Image, err error) {
	var we *waitError
	var se *storeError
	switch {
	case errors.As(err, &we):
		s.requeue(img, we.at)
		return
	case errors.As(err, &se) && errors.Is(se.err, state.ErrTransition):
		// A move the state machine does not allow: a bug of gcingest's,
		// not of the disk. Nothing was committed; this image alone is held
		// (loudly, looked at again hourly), the others go on.
		s.holdRefused(ctx, img, se.err)
		return
	case errors.As(err, &se):
		s.sched.stop(se.err)
		return
	case ctx.Err() != nil:
		// Shutting down: the state is as last committed; the next run
		// continues from there.
		s.log.Debug("image parked", "id", img.ID, "state", img.State)
		return
	}
	log := s.log.With("id", img.ID, "key", img.Key, "state", img.State)
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
		next := s.cfg.Now().Add(s.cfg.backoff(img.Attempts + 1))
		log.Error("after-upload action failed; will try again", "err", err, "at", next.Format(time.RFC3339))
		if serr := s.save(img, func(r *state.Image) { r.Attempts++; r.LastError = err.Error() }); serr != nil {
			s.sched.stop(serr) // PATTERNS.md, rule 4: never go on after a failed state write
			return
		}
		s.sched.enqueue(img.ID, next)
		return
	}
	blockedSince := time.Time{}
	if isQuota(err) {
		blockedSince = cmp.Or(img.BlockedSince, s.cfg.Now().UTC())
		if s.cfg.Now().Sub(blockedSince) > s.cfg.QuotaTimeout {
			err = s.quotaFailure(img, err)
		}
	}
	if !permanent(err) && !healable(err) && img.Attempts+1 >= s.cfg.UnknownErrorAttempts {
		err = inputErrorf("gave up after %d attempts at an error that waiting has not healed "+
			"(not the network, the server, the account or the disk's space): %v; fix its cause, then gcingest retry %d",
			img.Attempts+1, err, img.ID)
	}
	if permanent(err) {
		log.Error("image failed", "err", err)
		s.confirm.polls.forget(img.ID)
		if serr := s.save(img, func(r *state.Image) {
			r.Uploads = uploads
			r.State, r.RetryFrom, r.LastError, r.NextAttempt = state.Failed, "", err.Error(), time.Time{}
			r.WaitingFor, r.Until = "", time.Time{}
		}); serr != nil {
			s.handle(ctx, img, serr)
			return
		}
		if cerr := s.stepFailedFiles(ctx, img); cerr != nil {
			s.handle(ctx, img, cerr)
		}
		return
	}
	next := s.cfg.Now().Add(s.retryWait(img.Attempts+1, err))
	if serr := s.save(img, func(r *state.Image) {
		r.Uploads = uploads
		r.State, r.RetryFrom = state.Retrying, from
		r.Attempts++
		r.LastError, r.NextAttempt = err.Error(), next
		r.WaitingFor, r.Until = waitingForRetry(err), next
		r.BlockedSince = blockedSince
	}); serr != nil {
		s.handle(ctx, img, serr)
		return
	}
	log.Warn("transient error; retrying", "err", err, "attempt", img.Attempts, "at", next.Format(time.RFC3339))
	s.requeue(img, next)
}

// quotaFailure is the permanent form of a quota refusal that outlasted
// QuotaTimeout, with the sizes that decide it.
func (s *steps) quotaFailure(img *state.Image, err error) error {
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
		s.cfg.QuotaTimeout, img.BlockedSince.Format(time.RFC3339), total, done, err)
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
func (s *steps) holdRefused(ctx context.Context, img *state.Image, refused error) {
	s.log.Error("state machine refused a move; holding the image", "id", img.ID, "key", img.Key, "err", refused)
	// Failing is itself a move: never try it again when it was the move
	// refused, or the two would call each other.
	var te *state.TransitionError
	failing := errors.As(refused, &te) && te.To == state.Failed
	if img.Attempts+1 >= refusedHolds && !failing && state.Allowed(img.State, state.Failed) {
		s.handle(ctx, img, inputErrorf("internal error, %d times: %v; nothing of that step was recorded (please report this; gcingest retry %d starts the image over)",
			refusedHolds, refused, img.ID))
		return
	}
	msg := fmt.Sprintf("internal error: %v; nothing of that step was recorded, and the image is tried again in %s (please report this, with gcingest status %d)",
		refused, s.cfg.RefusedHold, img.ID)
	if err := s.save(img, func(r *state.Image) { r.LastError, r.Attempts = msg, r.Attempts+1 }); err != nil {
		var se *storeError
		if errors.As(err, &se) && !errors.Is(se.err, state.ErrTransition) {
			s.sched.stop(se.err)
			return
		}
	}
	s.sched.enqueue(img.ID, s.cfg.Now().Add(s.cfg.RefusedHold))
}
