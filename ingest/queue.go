package ingest

import (
	"container/heap"
	"context"
	"time"
)

// The work queue: images waiting for a worker, due now or later (queue),
// and being worked on (Pipeline.active). One worker per image at a time.

// queue holds the images waiting for a worker, in a heap by due time and,
// among images due at the same time, in the order they were queued; byID
// finds an image in it. An image is in it at most once. Adding, taking
// and finding an image cost O(log n) for n queued. The Pipeline calls its
// methods under p.mu.
type queue struct {
	heap entries
	byID map[uint64]*entry
	seq  uint64 // the last entry.seq given
}

type entry struct {
	id  uint64
	at  time.Time // when it is due
	seq uint64    // the order it was queued in: first queued, first taken
	i   int       // its index in the heap
}

// add makes id due at at, or now if at is zero or past. An image already
// due keeps its place; one due later is due at at instead (the last call
// wins), and one due now goes behind every image due before it.
func (q *queue) add(id uint64, at, now time.Time) {
	if at.IsZero() || at.Before(now) {
		at = now
	}
	if e, ok := q.byID[id]; ok && !e.at.After(now) {
		return
	}
	q.put(id, at)
}

// first puts id ahead of every image queued, and behind the ones put
// first before it: Run queues the unfinished images so.
func (q *queue) first(id uint64) {
	q.put(id, time.Time{})
}

// put queues id, or moves it, to be due at at, behind every image queued
// before it for the same time.
func (q *queue) put(id uint64, at time.Time) {
	q.seq++
	if e, ok := q.byID[id]; ok {
		e.at, e.seq = at, q.seq
		heap.Fix(&q.heap, e.i)
		return
	}
	if q.byID == nil {
		q.byID = map[uint64]*entry{}
	}
	e := &entry{id: id, at: at, seq: q.seq}
	q.byID[id] = e
	heap.Push(&q.heap, e)
}

// take removes and returns the first image due at now that is not busy;
// busy ones keep their place. held reports an image that may not go yet:
// the search ends at the first of them, so images that may go while
// others are held must be queued ahead of those (first). When nothing can
// go, take returns when the first image not yet due will be, or zero when
// none is queued or one held or busy must be waited for.
func (q *queue) take(now time.Time, busy, held func(uint64) bool) (id uint64, ok bool, wake time.Time) {
	var passed []*entry
	for len(q.heap) > 0 {
		e := q.heap[0]
		if e.at.After(now) {
			wake = e.at
			break
		}
		if busy(e.id) {
			passed = append(passed, heap.Pop(&q.heap).(*entry))
			continue
		}
		if held(e.id) {
			break
		}
		heap.Pop(&q.heap)
		delete(q.byID, e.id)
		id, ok = e.id, true
		break
	}
	for _, e := range passed {
		heap.Push(&q.heap, e)
	}
	return id, ok, wake
}

// due reports whether id is queued and due at now.
func (q *queue) due(id uint64, now time.Time) bool {
	e, ok := q.byID[id]
	return ok && !e.at.After(now)
}

// anyDue reports whether an image is due at now.
func (q *queue) anyDue(now time.Time) bool {
	return len(q.heap) > 0 && !q.heap[0].at.After(now)
}

// entries is the heap of a queue (container/heap).
type entries []*entry

func (h entries) Len() int { return len(h) }

func (h entries) Less(i, j int) bool {
	if c := h[i].at.Compare(h[j].at); c != 0 {
		return c < 0
	}
	return h[i].seq < h[j].seq
}

func (h entries) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].i, h[j].i = i, j
}

func (h *entries) Push(x any) {
	e := x.(*entry)
	e.i = len(*h)
	*h = append(*h, e)
}

func (h *entries) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

// enqueue makes id due at at (zero: now) and wakes an idle worker.
func (p *Pipeline) enqueue(id uint64, at time.Time) {
	p.mu.Lock()
	p.queue.add(id, at, p.cfg.Now())
	p.mu.Unlock()
	p.poke()
}

// next blocks until an image is due and not being worked on, and marks it
// active. While images found unfinished at start are recovering, only they
// are taken. It returns false when ctx is done or the pipeline stopped.
func (p *Pipeline) next(ctx context.Context) (uint64, bool) {
	busy := func(id uint64) bool {
		_, ok := p.active[id]
		return ok
	}
	held := func(id uint64) bool { return len(p.recovering) > 0 && !p.recovering[id] }
	for {
		p.mu.Lock()
		if p.stopErr != nil {
			p.mu.Unlock()
			return 0, false
		}
		now := p.cfg.Now()
		id, ok, wake := p.queue.take(now, busy, held)
		if ok {
			p.active[id] = &progress{}
			more := p.queue.anyDue(now)
			p.mu.Unlock()
			if more {
				p.poke() // let an idle worker take the next one
			}
			return id, true
		}
		p.mu.Unlock()

		if !p.idle(ctx, p.wake, wake, now) {
			return 0, false
		}
	}
}

// idle waits, with nothing to take, until wake (zero: no time set), a
// poke on poked, the pipeline's halt or the end of ctx, and reports
// whether ctx is still live: the upload workers and the confirmation lane
// wait the same way, each on its own poke.
func (p *Pipeline) idle(ctx context.Context, poked <-chan struct{}, wake, now time.Time) bool {
	var fire <-chan time.Time
	if !wake.IsZero() {
		timer := time.NewTimer(wake.Sub(now))
		defer timer.Stop()
		fire = timer.C
	}
	select {
	case <-ctx.Done():
	case <-p.halt:
	case <-poked:
	case <-fire:
	}
	return ctx.Err() == nil
}

// begun notes that image id's step is about to run: found unfinished at
// start, it holds new work no longer (recovering).
func (p *Pipeline) begun(id uint64) {
	p.mu.Lock()
	if !p.recovering[id] {
		p.mu.Unlock()
		return
	}
	delete(p.recovering, id)
	last := len(p.recovering) == 0
	p.mu.Unlock()
	if last {
		p.poke()
	}
}

func (p *Pipeline) release(id uint64) {
	p.mu.Lock()
	if p.finishing[id] {
		p.mu.Unlock()
		return // its finishLater commit releases it
	}
	delete(p.active, id)
	now := p.cfg.Now()
	poke := p.queue.due(id, now)
	// The lane passed over it while it was busy here (a worker handing
	// it over, say), and sleeps until poked.
	pokeLane := p.lane.due(id, now)
	if p.recovering[id] {
		delete(p.recovering, id)
		poke = poke || len(p.recovering) == 0
	}
	p.mu.Unlock()
	if poke {
		p.poke()
	}
	if pokeLane {
		select {
		case p.laneWake <- struct{}{}:
		default:
		}
	}
}

// finishLater makes an image's last commit, one that nothing waits on
// (finished: imported and its files moved), without keeping its worker:
// a goroutine of Run's calls commit, then then. The image stays active
// (no worker takes it) until the commit is made. At most Concurrency
// such commits wait at once; a worker that would exceed that waits its
// turn.
func (p *Pipeline) finishLater(id uint64, commit func() error, then func()) {
	p.finishers <- struct{}{}
	p.mu.Lock()
	p.finishing[id] = true
	p.mu.Unlock()
	p.finishWG.Add(1)
	go func() {
		defer p.finishWG.Done()
		err := commit()
		<-p.finishers
		p.mu.Lock()
		delete(p.finishing, id)
		p.mu.Unlock()
		p.release(id)
		if err != nil {
			p.stop(err)
			return
		}
		then()
	}()
}

// poke wakes one idle worker.
func (p *Pipeline) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}
