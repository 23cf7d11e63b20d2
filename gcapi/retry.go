package gcapi

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"time"
)

// RetryPolicy says how transient failures are retried.
//
// Which failures are retried depends on what the request does:
//
//   - Reads (GET, list-parts, asking for presigned URLs) and part PUTs are
//     safe to repeat: they are retried on a 408, 429, 502, 503, 504 or
//     507, on a failure without an *Error that IsTransient reports (a
//     network error, a stall, a proxy's refusal) and, up to 3 attempts, on
//     a 500.
//   - Requests that create or change something (POST uploads, POST items,
//     PATCH items, complete, abort) are retried only when the request
//     surely did not take effect: a 429 or 507 (refused before acting), or
//     a connection that could not be opened (refused, a failed dial or DNS
//     lookup). They are never retried on a 500, 502, 503 or 504 (a gateway
//     that lost, timed out or broke off the server's answer: the server may
//     have acted) nor on a reset or timeout after the request was sent:
//     those are returned wrapped so that errors.Is(err, ErrAmbiguous)
//     holds, since a repeat risks a stray Initialized upload (counted
//     against the account's cap) or a second image import started by a
//     repeated PATCH. What follows is the caller's: UploadFile fetches the
//     upload after an ambiguous complete and repeats it only if the upload
//     is still Initialized; an ambiguous CreateUpload is not looked for (the
//     pipeline's next attempt creates a new upload; the stray one stays
//     Initialized until the server deletes it a day later); the pipeline
//     looks an item's title up before creating it again, and reconciles a
//     PATCH with the item's values.
//
// Waits grow exponentially from BaseDelay with full jitter, capped at
// MaxDelay; a Retry-After header replaces the computed wait (up to
// 4×MaxDelay). A cancelled context ends the wait at once.
type RetryPolicy struct {
	MaxAttempts int           // attempts per request including the first; 0 means the default (8)
	BaseDelay   time.Duration // first backoff (default 200ms), doubled each time, with jitter
	MaxDelay    time.Duration // cap of one backoff (default 30s); Retry-After may exceed it up to MaxDelay*4
	// OnRetry, when set, is called before each wait with the request's
	// context (so a caller can tell whose request it was), the attempt that
	// failed (1 for the first), the wait and the error.
	OnRetry func(ctx context.Context, method, url string, attempt int, wait time.Duration, err error)
}

// Retry defaults.
const (
	defaultMaxAttempts = 8
	defaultBaseDelay   = 200 * time.Millisecond
	defaultMaxDelay    = 30 * time.Second
	// max500Attempts bounds the retries of a 500 on a safe request: a 500
	// that persists is a bug on the server, not a hiccup.
	max500Attempts = 3
)

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = defaultMaxAttempts
	}
	if p.BaseDelay <= 0 {
		p.BaseDelay = defaultBaseDelay
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = defaultMaxDelay
	}
	if p.MaxDelay < p.BaseDelay {
		p.MaxDelay = p.BaseDelay
	}
	return p
}

// reqKind says whether a request may be repeated blindly.
type reqKind int

const (
	// kindSafe: repeating it changes nothing (GET, presigned URLs, part PUT).
	kindSafe reqKind = iota
	// kindCreate: it creates or changes something on the server.
	kindCreate
)

// shouldRetry decides whether a failed attempt (1-based) is repeated.
func shouldRetry(kind reqKind, attempt int, err error) bool {
	var e *Error
	if errors.As(err, &e) {
		if kind == kindCreate && ambiguousStatus(e.StatusCode) {
			return false
		}
		if transientStatus(e.StatusCode) && e.StatusCode != http.StatusRequestTimeout {
			return true
		}
		if kind == kindSafe {
			return e.StatusCode == http.StatusRequestTimeout ||
				(e.StatusCode == http.StatusInternalServerError && attempt < max500Attempts)
		}
		return false
	}
	if kind == kindSafe {
		return IsTransient(err)
	}
	return notSent(err)
}

// backoff returns the wait before attempt+1: full jitter over an
// exponentially growing window, or the server's Retry-After.
func (p RetryPolicy) backoff(attempt int, err error) time.Duration {
	var e *Error
	if errors.As(err, &e) && e.RetryAfter > 0 {
		return min(e.RetryAfter, 4*p.MaxDelay)
	}
	window := p.BaseDelay
	for i := 1; i < attempt && window < p.MaxDelay; i++ {
		window *= 2
	}
	window = min(window, p.MaxDelay)
	return time.Duration(rand.Int64N(int64(window) + 1))
}

// retry runs attempt until it succeeds, fails in a way that is not retried
// for kind, the attempts are used up, or ctx ends. redactedURL is only used
// for reports.
func (c *Client) retry(ctx context.Context, method, redactedURL string, kind reqKind, attempt func(context.Context) error) error {
	p := c.retryPolicy
	for n := 1; ; n++ {
		err := attempt(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		if n >= p.MaxAttempts || !shouldRetry(kind, n, err) {
			return err
		}
		wait := p.backoff(n, err)
		if p.OnRetry != nil {
			p.OnRetry(ctx, method, redactedURL, n, wait, err)
		}
		c.log.Debug("retrying request", "method", method, "url", redactedURL, "attempt", n, "wait", wait, "err", err)
		if err := sleepCtx(ctx, wait); err != nil {
			return err
		}
	}
}

// sleepCtx waits d or until ctx ends, returning ctx's error then.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
