package ingest

import (
	"context"
	"sync"
	"time"

	"github.com/gcingest/gcingest/state"
)

// The client (gcapi) retries a failed request itself, for minutes at a
// time, before its error reaches a step; meanwhile the record still says
// "uploading" with no next attempt. clientRetries holds, per image, what
// the client is waiting out, so that status and /metrics say "retrying"
// with the next attempt and the error from the first failed attempt.

// stepKey keys the image and state a step works on in its context, so
// that a request the client retries can be told whose it is.
type stepKey struct{}

type stepRef struct {
	id    uint64
	state state.State
}

// withStep returns ctx carrying the image and state of the step it is for.
func withStep(ctx context.Context, id uint64, st state.State) context.Context {
	return context.WithValue(ctx, stepKey{}, stepRef{id, st})
}

// clientRetry is a request of an image's step that the client is retrying.
type clientRetry struct {
	from state.State // the record's state meanwhile
	next time.Time   // when the client tries again
	err  string
}

// clientRetries holds the images whose requests the client is retrying.
type clientRetries struct {
	mu sync.Mutex
	m  map[uint64]clientRetry
}

func (c *clientRetries) set(id uint64, r clientRetry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[uint64]clientRetry{}
	}
	c.m[id] = r
}

func (c *clientRetries) clear(id uint64) {
	c.mu.Lock()
	delete(c.m, id)
	c.mu.Unlock()
}

func (c *clientRetries) get(id uint64) (clientRetry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.m[id]
	return r, ok
}

// byState counts the images being retried by the record's state.
func (c *clientRetries) byState() map[state.State]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[state.State]int{}
	for _, r := range c.m {
		out[r.from]++
	}
	return out
}

// NoteRetry records that the client is retrying a request of the step
// ctx belongs to (gcapi.RetryPolicy.OnRetry): wait until the next
// attempt, after err. A request of no step is ignored.
func (p *Pipeline) NoteRetry(ctx context.Context, wait time.Duration, err error) {
	ref, ok := ctx.Value(stepKey{}).(stepRef)
	if !ok || err == nil {
		return
	}
	p.retries.set(ref.id, clientRetry{from: ref.state, next: p.cfg.Now().Add(wait), err: err.Error()})
}

// ClientRetrying counts the images whose requests the client is retrying
// now, by the state their records are in: /metrics shows them as
// retrying, not as the state their records still say.
func (p *Pipeline) ClientRetrying() map[state.State]int { return p.retries.byState() }
