package ingest

import (
	"context"
	"slices"
	"time"
)

// The work queue: images due now (ready, FIFO), due later (waiting), and
// being worked on (active). One worker per image at a time.

// enqueue makes id due at at (zero: now).
func (p *Pipeline) enqueue(id uint64, at time.Time) {
	p.mu.Lock()
	if at.IsZero() || !at.After(p.cfg.Now()) {
		delete(p.waiting, id)
		if !slices.Contains(p.ready, id) {
			p.ready = append(p.ready, id)
		}
	} else if !slices.Contains(p.ready, id) {
		p.waiting[id] = at
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// next blocks until an image is due and not being worked on, and marks it
// active. It returns false when ctx is done or the pipeline stopped.
func (p *Pipeline) next(ctx context.Context) (uint64, bool) {
	for {
		p.mu.Lock()
		if p.stopErr != nil {
			p.mu.Unlock()
			return 0, false
		}
		now := p.cfg.Now()
		var soonest time.Time
		for id, at := range p.waiting {
			if !at.After(now) {
				delete(p.waiting, id)
				p.ready = append(p.ready, id)
			} else if soonest.IsZero() || at.Before(soonest) {
				soonest = at
			}
		}
		for i, id := range p.ready {
			if _, busy := p.active[id]; busy {
				continue
			}
			if len(p.recovering) > 0 && !p.recovering[id] {
				continue
			}
			p.ready = slices.Delete(p.ready, i, i+1)
			p.active[id] = &progress{}
			more := len(p.ready) > 0
			p.mu.Unlock()
			if more {
				p.poke() // let an idle worker take the next one
			}
			return id, true
		}
		p.mu.Unlock()

		var timer *time.Timer
		var fire <-chan time.Time
		if !soonest.IsZero() {
			timer = time.NewTimer(soonest.Sub(now))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
		case <-p.halt:
		case <-p.wake:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return 0, false
		}
	}
}

func (p *Pipeline) release(id uint64) {
	p.mu.Lock()
	if p.finishing[id] {
		p.mu.Unlock()
		return // its finishLater commit releases it
	}
	delete(p.active, id)
	poke := slices.Contains(p.ready, id)
	if p.recovering[id] {
		delete(p.recovering, id)
		poke = poke || len(p.recovering) == 0
	}
	p.mu.Unlock()
	if poke {
		p.poke()
	}
}

// poke wakes one idle worker.
func (p *Pipeline) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}
