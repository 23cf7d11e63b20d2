package ingest

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/state"
)

// The confirmation lane: images whose values were attached (importing)
// are looked at here, in cycles, off the upload workers. One cycle takes
// every importing image due, reads each archive's items once for all of
// them (readItems), and settles each from that read: an import seen done
// never waits behind a backlog of uploads, and the uploads never wait for
// confirmations. The images that finish here are moved or deleted here
// too (markDone, stepAfter).

// laneBatch bounds the images one cycle takes: a cycle's reads and
// settling end before the next begins, and a few thousand images at once
// would hold the rest a long time.
const laneBatch = 1000

// laneReaders bounds the item GETs of one cycle in flight at once.
const laneReaders = 8

// listItemCost is what reading one item of an archive's listing costs,
// in requests: decoding an item with its values is about a twentieth of a
// request's round trip and decoding on both ends. A listing of S items in
// pages of listPage costs S/listPage + S/listItemCost requests; n GETs
// cost n (readItems chooses the cheaper).
const (
	listItemCost = 20
	listPage     = 1000 // the server's max_limit (grand-challenge.org app/grandchallenge/core/pagination.py)
)

// inLane reports whether an image in state st (coming from from, when
// retrying) is the lane's: importing, or finished and only its files
// left to move. Anything else is the upload workers'.
func inLane(st, from state.State) bool {
	switch st {
	case state.Importing, state.Done, state.Duplicate, state.Finished:
		return true
	case state.Retrying:
		return from == state.Importing
	}
	return false
}

// importingNow reports whether img waits on an import: the lane's to look
// at, not an upload worker's.
func importingNow(img *state.Image) bool {
	return img.State == state.Importing || (img.State == state.Retrying && img.RetryFrom == state.Importing)
}

// requeue makes img due at at in the lane when it waits on an import,
// else in the upload workers' queue.
func (s *steps) requeue(img *state.Image, at time.Time) {
	if importingNow(img) {
		s.sched.toLane(img.ID, at)
		return
	}
	s.sched.enqueue(img.ID, at)
}

// toLane makes id due in the lane at at (zero: now).
func (p *Pipeline) toLane(id uint64, at time.Time) {
	p.mu.Lock()
	p.lane.add(id, at, p.cfg.Now())
	p.mu.Unlock()
	select {
	case p.laneWake <- struct{}{}:
	default:
	}
}

// runLane runs confirmation cycles until ctx is done or the pipeline
// stops.
func (p *Pipeline) runLane(ctx context.Context) {
	busy := func(id uint64) bool {
		_, ok := p.active[id]
		return ok
	}
	never := func(uint64) bool { return false }
	for {
		var ids []uint64
		p.mu.Lock()
		if p.stopErr != nil {
			p.mu.Unlock()
			return
		}
		now := p.cfg.Now()
		var wake time.Time
		for len(ids) < laneBatch {
			id, ok, w := p.lane.take(now, busy, never)
			if !ok {
				wake = w
				break
			}
			p.active[id] = &progress{}
			ids = append(ids, id)
		}
		p.mu.Unlock()
		if len(ids) > 0 {
			p.cycle(ctx, ids)
			continue
		}
		if !p.idle(ctx, p.laneWake, wake, now) {
			return
		}
	}
}

// cycle settles the images ids (marked active), reading their items
// first, then releases them.
func (p *Pipeline) cycle(ctx context.Context, ids []uint64) {
	var imgs []*state.Image
	for _, id := range ids {
		img, err := p.store.Get(id)
		if err != nil {
			continue // process reports it
		}
		if importingNow(&img) {
			imgs = append(imgs, &img)
		}
	}
	p.confirm.readItems(ctx, imgs)
	sem := make(chan struct{}, max(p.cfg.Concurrency, 4))
	var wg sync.WaitGroup
	for _, id := range ids {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			p.steps.process(ctx, id, true)
			p.confirm.reads.take(id) // one the image did not use (it left importing first)
			p.release(id)
		}()
	}
	wg.Wait()
}

// itemRead is an item as a cycle read it for an image, or why it could
// not.
type itemRead struct {
	it  *gcapi.ArchiveItem
	err error
}

// itemReads holds the items a cycle read, by image, until the image's
// step takes its own.
type itemReads struct {
	mu sync.Mutex
	m  map[uint64]itemRead
}

func (r *itemReads) put(id uint64, it *gcapi.ArchiveItem, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[uint64]itemRead{}
	}
	r.m[id] = itemRead{it, err}
}

func (r *itemReads) take(id uint64) (itemRead, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	got, ok := r.m[id]
	delete(r.m, id)
	return got, ok
}

// readItems reads the items of imgs, each archive's once: one listing of
// the archive when that costs fewer requests than a GET per image (by
// the archive's size, as its last listing showed it, and how many of its
// images are due), else a GET per
// image, laneReaders at a time. What it read waits in cf.reads for the
// image's step (itemNow).
func (cf *confirmer) readItems(ctx context.Context, imgs []*state.Image) {
	byArchive := map[string][]*state.Image{}
	for _, img := range imgs {
		w, err := cf.watchOf(img)
		if err != nil {
			continue // the step fails it
		}
		slug := archiveSlug(img, w)
		byArchive[slug] = append(byArchive[slug], img)
	}
	var gets []*state.Image
	for slug, group := range byArchive {
		ar, err := cf.server.archive(ctx, slug)
		if err != nil {
			for _, img := range group {
				cf.reads.put(img.ID, nil, err)
			}
			continue
		}
		x := cf.server.index(ar.PK)
		// An archive never listed may hold half a million items: read
		// by GETs until a lookup by title has listed it.
		size, listed := x.size()
		if listCost := 1 + size/listPage + size/listItemCost; !listed || len(group) <= listCost {
			gets = append(gets, group...)
			continue
		}
		items, err := cf.server.listArchive(ctx, x, ar, cf.cfg.Now())
		if err != nil {
			err = fmt.Errorf("list archive %s: %w", slug, err)
		}
		byPK := make(map[string]*gcapi.ArchiveItem, len(items))
		for i := range items {
			byPK[items[i].PK] = &items[i]
		}
		for _, img := range group {
			switch it := byPK[img.ItemPK]; {
			case err != nil:
				cf.reads.put(img.ID, nil, err)
			case it != nil:
				cf.reads.put(img.ID, it, nil)
			default:
				gets = append(gets, img) // not listed (another's listing served, or too new)
			}
		}
	}
	sem := make(chan struct{}, laneReaders)
	var wg sync.WaitGroup
	for _, img := range gets {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			it, err := cf.api.ArchiveItem(ctx, img.ItemPK)
			if err != nil {
				err = fmt.Errorf("get archive item %s: %w", img.ItemPK, err)
			}
			cf.reads.put(img.ID, it, err)
		}()
	}
	wg.Wait()
}

// firstLook is when the lane first looks at an importing image: a cycle
// after its PATCH, for no import is done sooner.
func (cf *confirmer) firstLook(img *state.Image) time.Time {
	return cmp.Or(img.PatchSentAt, cf.cfg.Now()).Add(cf.cfg.PollInterval)
}
