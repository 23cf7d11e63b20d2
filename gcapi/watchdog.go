package gcapi

import (
	"context"
	"errors"
	"io"
	"time"
)

// watchdog cancels one request attempt when no byte has moved for a while,
// so a stalled connection is cut without limiting how long a slow but
// moving transfer may take.
type watchdog struct {
	ctx    context.Context
	parent context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	d      time.Duration
	err    *stallError
}

func newWatchdog(parent context.Context, d time.Duration) (context.Context, *watchdog) {
	ctx, cancel := context.WithCancelCause(parent)
	w := &watchdog{ctx: ctx, parent: parent, cancel: cancel, d: d, err: &stallError{after: d}}
	w.timer = time.AfterFunc(d, func() { cancel(w.err) })
	return ctx, w
}

// kick records progress.
func (w *watchdog) kick() { w.timer.Reset(w.d) }

// stop releases the watchdog; call it when the attempt is over.
func (w *watchdog) stop() {
	w.timer.Stop()
	w.cancel(nil)
}

// cause replaces the context error of an attempt the watchdog cut by the
// stall error, which counts as a timeout. Errors of a cancelled parent
// context pass unchanged.
func (w *watchdog) cause(err error) error {
	if err == nil || w.parent.Err() != nil {
		return err
	}
	var st *stallError
	if errors.As(context.Cause(w.ctx), &st) && !errors.As(err, &st) {
		return &stalledErr{stall: st, err: err}
	}
	return err
}

// stalledErr keeps the transport's error text but unwraps to the stall only,
// so that IsTransient sees a timeout and not a cancellation.
type stalledErr struct {
	stall *stallError
	err   error
}

func (e *stalledErr) Error() string { return e.stall.Error() + ": " + e.err.Error() }
func (e *stalledErr) Unwrap() error { return e.stall }

// minProgress is how many bytes of an answer count as progress: a body
// that trickles a byte every few seconds is stalled, not slow, and must
// not hold a request (and the agent's start-up behind it) for ever. With
// the default stall timeout of 60s, an answer slower than about 17 bytes
// per second is cut.
const minProgress = 1 << 10

// reader wraps r so that every minProgress bytes read kick the watchdog.
func (w *watchdog) reader(r io.Reader) io.Reader { return &kickReader{r: r, w: w} }

type kickReader struct {
	r       io.Reader
	w       *watchdog
	pending int // bytes read since the last kick
}

func (k *kickReader) Read(p []byte) (int, error) {
	n, err := k.r.Read(p)
	k.pending += n
	if k.pending >= minProgress {
		k.pending = 0
		k.w.kick()
	}
	return n, err
}
