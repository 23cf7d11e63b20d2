package ingest

import (
	"errors"
	"sync"
	"time"

	"github.com/gcingest/gcingest/gcapi"
)

// Retry pacing follows the server, not one image's luck: an image that
// meets a transient fault while the server answers the other images'
// requests waits at most half a minute (luckyAttempts), however many faults
// it met before; only while nothing succeeds does its backoff grow to
// RetryMax. Under intermittent faults (a quarter of the requests) an
// unlucky image would otherwise wait minutes for nothing.

// answeringWindow is how recent a step's success must be for the server
// to count as answering.
const answeringWindow = 30 * time.Second

// luckyAttempts caps the backoff exponent of an image whose fault was its
// own luck: RetryBase doubled twice (20 s at the default 5 s, 25 s with
// the jitter).
const luckyAttempts = 3

// serverHealth is when a step last got its answers from the server.
type serverHealth struct {
	mu     sync.Mutex
	lastOK time.Time
}

func (h *serverHealth) ok(now time.Time) {
	h.mu.Lock()
	if now.After(h.lastOK) {
		h.lastOK = now
	}
	h.mu.Unlock()
}

// answering reports whether a step succeeded within answeringWindow of now.
func (h *serverHealth) answering(now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.lastOK.IsZero() && now.Sub(h.lastOK) < answeringWindow
}

// retryWait is the wait before attempt n of an image after err: its own
// exponential backoff, capped at luckyAttempts' while the server answers
// others and err is a fault of the network or the server's (not the
// quota, not the configuration: those hold every image alike).
func (s *steps) retryWait(n int, err error) time.Duration {
	var ce *configError
	luck := (gcapi.IsTransient(err) || errors.Is(err, gcapi.ErrAmbiguous)) && !isQuota(err) && !errors.As(err, &ce)
	if luck && s.health.answering(s.cfg.Now()) {
		n = min(n, luckyAttempts)
	}
	return s.cfg.backoff(n)
}
