package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/watch"
)

// Store is what the pipeline needs from the state file; *state.Store has it.
type Store interface {
	CreateEach(imgs []*state.Image, skip func(i int, existing []state.Image) bool) ([]bool, error)
	Get(id uint64) (state.Image, error)
	Update(id uint64, fn func(*state.Image) error) (state.Image, error)
	List(states ...state.State) ([]state.Image, error)
	Unfinished() ([]state.Image, error)
	ByKey(watch, key string) ([]state.Image, error)
}

// API is what the pipeline needs from the Grand Challenge client;
// *gcapi.Client has it.
type API interface {
	ArchiveBySlug(ctx context.Context, slug string) (*gcapi.Archive, error)
	InterfaceBySlug(ctx context.Context, slug string) (*gcapi.Interface, error)
	ArchiveItems(ctx context.Context, archivePK string) ([]gcapi.ArchiveItem, error)
	ArchiveItem(ctx context.Context, pk string) (*gcapi.ArchiveItem, error)
	CreateArchiveItem(ctx context.Context, archiveAPIURL, title string) (*gcapi.ArchiveItem, error)
	UpdateArchiveItem(ctx context.Context, pk string, values []gcapi.ValueUpdate) (*gcapi.ArchiveItem, error)
	UploadSessions(ctx context.Context) ([]gcapi.UploadSession, error)
	UploadSession(ctx context.Context, pk string) (*gcapi.UploadSession, error)
	Upload(ctx context.Context, pk string) (*gcapi.Upload, error)
	AbortUpload(ctx context.Context, u *gcapi.Upload) (*gcapi.Upload, error)
	UploadFile(ctx context.Context, f gcapi.FileUpload) (*gcapi.Upload, error)
	Image(ctx context.Context, pkOrURL string) (*gcapi.Image, error)
}

// PipelineConfig tunes a Pipeline. Zero values take the defaults noted.
type PipelineConfig struct {
	Watches         []Watch // by Path; Archive, Interface, Title, AfterUpload, DoneDir, FailedDir are used
	SpoolDir        string  // where ZIPs of multi-file images are built, e.g. <state dir>/spool
	Concurrency     int     // images in flight; default 4
	PartConcurrency int     // parts of one file in flight; default 4
	PartSize        int64   // default 0: the client's default (32 MiB)

	PollInterval  time.Duration // the import poll cycle: an importing image's item is looked at this often; default 1s
	PollMax       time.Duration // the wait after an import outlived its deadline, still running; default 30s
	ImportTimeout time.Duration // after this, a still-running import is reported in LastError; default 3h
	// QuotaTimeout is how long an image may stay blocked by the upload
	// quota before it fails, naming its size: by then every upload the
	// account had when it was first blocked has expired (24 h), so what
	// still fills the quota is the image itself. Default 25h.
	QuotaTimeout time.Duration
	// RefusedHold is how long an image whose step made a move the state
	// machine refuses (a bug) waits before it is looked at again; after
	// refusedHolds of them it fails. Default 1h.
	RefusedHold time.Duration
	RetryBase   time.Duration // first backoff after a transient error; default 5s
	RetryMax    time.Duration // longest backoff; default 10m
	// UnknownErrorAttempts is how many attempts an image gets at an error
	// of no kind known to heal by waiting (healable) before it fails with
	// it; default 150, about a day at the default backoff.
	UnknownErrorAttempts int

	Now func() time.Time // the clock; default time.Now

	// BeforeStep, if set, is called before each step of an image with the
	// state it is in. A non-nil error stops that image's worker on the spot
	// without writing anything, as if the process died there: tests use it
	// to simulate crashes.
	BeforeStep func(id uint64, st state.State) error

	// Progress, if set, hears of upload progress as bytes are sent (for a
	// live display and the bytes counter of /metrics). It is called from
	// the workers, never under the pipeline's lock; it must return quickly.
	Progress func(ProgressEvent)
}

func (c *PipelineConfig) applyDefaults() {
	if c.Concurrency <= 0 {
		c.Concurrency = 4
	}
	if c.PartConcurrency <= 0 {
		c.PartConcurrency = 4
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.PollMax <= 0 {
		c.PollMax = 30 * time.Second
	}
	if c.PollMax < c.PollInterval {
		c.PollMax = c.PollInterval
	}
	if c.ImportTimeout <= 0 {
		c.ImportTimeout = 3 * time.Hour
	}
	if c.RefusedHold <= 0 {
		c.RefusedHold = time.Hour
	}
	if c.QuotaTimeout <= 0 {
		c.QuotaTimeout = 25 * time.Hour
	}
	if c.RetryBase <= 0 {
		c.RetryBase = 5 * time.Second
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 10 * time.Minute
	}
	if c.UnknownErrorAttempts <= 0 {
		c.UnknownErrorAttempts = 150
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Pipeline drives recorded images through their states to archive items.
// Submit records work; Run does it. One Pipeline per state file.
//
// The Pipeline itself is the scheduler: it records images, queues them,
// runs the upload workers and the confirmation lane, and keeps what each
// image's worker is doing for Snapshot. What is done to an image, one
// step at a time, is its steps' (steps.go), which reach it only through
// the scheduler interface they declare.
type Pipeline struct {
	cfg     PipelineConfig
	store   Store
	log     *slog.Logger
	watches map[string]Watch // by path; read-only after NewPipeline
	steps   *steps           // what is done to an image, one step at a time
	confirm *confirmer       // the lane's reads of the importing images' items (lane.go)
	retries *clientRetries   // requests the client is retrying, by image (clientretry.go)

	mu      sync.Mutex
	queue   queue                // waiting for an upload worker, due now or later (retries)
	lane    queue                // importing: waiting for the confirmation lane's cycle (lane.go)
	active  map[uint64]*progress // being worked on
	running bool
	stopErr error // a state write failed: no new work is taken
	// finishing holds the images whose last commit a finishLater
	// goroutine is making; finishers bounds them, finishWG waits for them.
	finishing map[uint64]bool
	finishers chan struct{}
	finishWG  sync.WaitGroup
	// recovering holds the unfinished images found at start whose first
	// step has not begun; new work waits until every one has begun, so
	// that everything from an earlier run goes first. Begun, not ended: a
	// slow first step (a long upload, a request hung until its timeout)
	// held every new image for as long (seen as 19 of 20 new images
	// waiting behind one recovered image's hung item create).
	recovering map[uint64]bool
	wake       chan struct{}
	laneWake   chan struct{}
	halt       chan struct{} // closed by stop: every worker ends
}

// progress is what Snapshot shows of an image being worked on.
type progress struct {
	sent, total int64
	key         string
	// hashed counts the bytes the hash step has read so far, of total: a
	// file of many GiB takes minutes, shown as such in status.
	hashed bool
}

// NewPipeline returns a pipeline over the store and the API. log may be nil.
func NewPipeline(cfg PipelineConfig, store Store, api API, log *slog.Logger) *Pipeline {
	cfg.applyDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	watches := map[string]Watch{}
	for _, w := range cfg.Watches {
		if w.Group != watch.GroupFolder {
			// replace is a folder-mode key: a lone image never replaces
			// what its item holds.
			w.Replace = false
		}
		watches[w.Path] = w
	}
	p := &Pipeline{
		cfg: cfg, store: store, log: log, watches: watches,
		retries:    &clientRetries{},
		active:     map[uint64]*progress{},
		finishing:  map[uint64]bool{},
		finishers:  make(chan struct{}, cfg.Concurrency),
		recovering: map[uint64]bool{},
		wake:       make(chan struct{}, 1),
		laneWake:   make(chan struct{}, 1),
		halt:       make(chan struct{}),
	}
	recs := &records{store: store, log: log, watches: watches}
	server := newServerCache(api, cfg.Now)
	held := &heldFiles{store: store}
	secret := &deidSecret{path: cfg.SecretPath()}
	plan := newPlanner(cfg, store, api, server, secret, log)
	p.confirm = &confirmer{
		records: recs, cfg: cfg, api: api, server: server, held: held,
		polls: newImportPolls(), finish: p,
	}
	p.steps = &steps{
		records: recs, cfg: cfg, api: api, server: server, held: held, plan: plan,
		up: &uploader{
			records: recs, cfg: cfg, api: api, plan: plan, secret: secret, progress: p,
		},
		confirm: p.confirm, retries: p.retries, sched: p,
	}
	p.steps.up.inArchive = p.steps.contentInArchive
	return p
}

// fillInterfaces gives the values migrated from schema 2 without an
// interface (lone images, which took it from their watch at every step)
// the interface of their watch, before any step relies on it.
func (p *Pipeline) fillInterfaces(imgs []state.Image) error {
	for i := range imgs {
		w, ok := p.watches[imgs[i].Watch]
		if !ok || !slices.ContainsFunc(imgs[i].Values, func(v state.Value) bool { return v.Interface == "" }) {
			continue
		}
		out, err := p.store.Update(imgs[i].ID, func(r *state.Image) error {
			for j := range r.Values {
				if r.Values[j].Interface == "" {
					r.Values[j].Interface = w.Interface
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("fill in the interface of image %d: %w", imgs[i].ID, err)
		}
		imgs[i] = out
	}
	return nil
}

// ErrStopped is returned (wrapped) by Submit once a state write has failed
// (a full disk, say): the pipeline takes no new work until restarted.
var ErrStopped = errors.New("pipeline stopped taking new work")

// Submit records g as a pending image and queues it. The record is
// committed before Submit returns, so the image survives a crash from then
// on. A group already recorded with the same files (sizes and modification
// times) is not recorded again; one whose latest record has not yet
// reached the archive item joins that record (joinFiles), which is planned
// again with the files as they are now. Changed content of an image
// already attached makes a new record.
func (p *Pipeline) Submit(ctx context.Context, g Group) error {
	return p.SubmitAll(ctx, []Group{g})[0]
}

// SubmitAll is Submit for each of gs, with one commit for all of them:
// what becomes ready together (a backlog found at start, a folder of
// scans) costs one fsync, not one per image. It returns each group's
// error, nil for one recorded, joined or already known.
func (p *Pipeline) SubmitAll(ctx context.Context, gs []Group) []error {
	if len(gs) > submitBatch {
		// A backlog of thousands is recorded a batch at a time: one
		// transaction of it all would hold every record in memory at once.
		var errs []error
		for start := 0; start < len(gs); start += submitBatch {
			errs = append(errs, p.SubmitAll(ctx, gs[start:min(start+submitBatch, len(gs))])...)
		}
		return errs
	}
	errs := make([]error, len(gs))
	if err := ctx.Err(); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	var imgs []*state.Image
	var which []int // index in gs of each of imgs
	for i, g := range gs {
		img, err := p.newRecord(g)
		if err != nil {
			errs[i] = err
			continue
		}
		imgs, which = append(imgs, img), append(which, i)
	}
	if len(imgs) == 0 {
		return errs
	}
	fps := make([]string, len(imgs))
	for i, img := range imgs {
		fps[i] = fingerprint(img.Files)
	}
	joins := make([]uint64, len(imgs))
	created, err := p.store.CreateEach(imgs, func(i int, existing []state.Image) bool {
		joins[i] = 0
		for j := range existing {
			if fingerprint(existing[j].Files) == fps[i] || fingerprint(existing[j].Joined) == fps[i] {
				return true
			}
		}
		if n := len(existing); n > 0 && beforeItem(&existing[n-1]) {
			joins[i] = existing[n-1].ID
			return true
		}
		return false
	})
	if err != nil {
		p.stop(err)
		for _, i := range which {
			errs[i] = fmt.Errorf("submit %s: %w", gs[i].Key, err)
		}
		return errs
	}
	for k, img := range imgs {
		i := which[k]
		switch {
		case joins[k] != 0:
			errs[i] = p.joinFiles(ctx, gs[i], joins[k], img.Files)
		case created[k]:
			p.log.Info("image recorded", "id", img.ID, "watch", img.Watch, "key", img.Key, "files", len(img.Files))
			p.enqueue(img.ID, time.Time{})
		}
	}
	return errs
}

// submitBatch is the most images SubmitAll records in one commit.
const submitBatch = 500

// newRecord checks g and returns the record Submit makes of it.
func (p *Pipeline) newRecord(g Group) (*state.Image, error) {
	if err := p.stopped(); err != nil {
		return nil, fmt.Errorf("submit %s: %w", g.Key, err)
	}
	if _, ok := p.watches[g.Watch]; !ok {
		return nil, fmt.Errorf("submit %s: no watch configured for %s", g.Key, g.Watch)
	}
	if len(g.Files) == 0 {
		return nil, fmt.Errorf("submit %s: group has no files", g.Key)
	}
	switch g.Kind {
	case KindSingle, KindMHD, KindZip, KindFolder:
	default:
		return nil, fmt.Errorf("submit %s: groups of kind %q are not handled by the pipeline yet", g.Key, g.Kind)
	}
	img := &state.Image{Watch: g.Watch, Key: g.Key, Kind: string(g.Kind), State: state.Pending, Archive: p.watches[g.Watch].Archive}
	for _, f := range g.Files {
		img.Files = append(img.Files, state.File{Rel: f.Rel, Path: f.Path, Size: f.Size, ModTime: f.ModTime.UTC()})
	}
	return img, nil
}

// beforeItem reports whether img has not yet touched an archive item, so
// that its files may still change under it without a new record.
func beforeItem(img *state.Image) bool {
	st := img.State
	if st == state.Retrying {
		st = img.RetryFrom
	}
	return st == state.Pending || st == state.Uploading || st == state.Uploaded
}

// fingerprint identifies a group's files without reading them.
func fingerprint(files []state.File) string {
	var b []byte
	for _, f := range files {
		if f.Gathered {
			continue // not the grouper's: what it returns again has none
		}
		b = fmt.Appendf(b, "%s\x00%d\x00%d\x00", f.Rel, f.Size, f.ModTime.UnixNano())
	}
	return string(b)
}

func (p *Pipeline) stopped() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopErr
}

// stop records that a state write failed; no new work is taken.
func (p *Pipeline) stop(err error) {
	p.mu.Lock()
	first := p.stopErr == nil
	if first {
		p.stopErr = fmt.Errorf("%w: the state file cannot be written (%v); images already done are kept; "+
			"free disk space or fix the file and restart gcingest", ErrStopped, err)
		close(p.halt)
	}
	p.mu.Unlock()
	if first {
		p.log.Error("state file write failed; taking no new work", "err", err)
	}
}

// Err returns why the pipeline stopped taking work, or nil.
func (p *Pipeline) Err() error { return p.stopped() }

// Run queues every unfinished image (reconciling each with the server
// before anything new is created for it), then works until ctx is done. It
// returns after every goroutine it started has ended: nil when ctx was
// cancelled, or the reason work stopped (a state file that cannot be
// written).
func (p *Pipeline) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.running {
		p.mu.Unlock()
		return errors.New("pipeline is already running")
	}
	p.running = true
	// Set before any worker starts, read by them: uploads created before
	// it may be ours and unrecorded.
	p.steps.started = p.cfg.Now()
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.running = false
		p.mu.Unlock()
	}()

	imgs, err := p.store.Unfinished()
	if err != nil {
		return fmt.Errorf("list unfinished images: %w", err)
	}
	if err := p.fillInterfaces(imgs); err != nil {
		return err
	}
	// Unfinished work goes first, in the order it was recorded; anything
	// Submit queued before Run stays behind it.
	p.mu.Lock()
	for _, img := range imgs {
		if now := p.cfg.Now(); img.State == state.Retrying && img.NextAttempt.After(now) {
			p.queue.add(img.ID, img.NextAttempt, now)
			continue
		}
		p.queue.first(img.ID)
		p.recovering[img.ID] = true
	}
	p.mu.Unlock()
	if len(imgs) > 0 {
		p.log.Info("resuming unfinished images", "count", len(imgs))
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.runLane(ctx)
	}()
	for range p.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				id, ok := p.next(ctx)
				if !ok {
					return
				}
				p.steps.process(ctx, id, false)
				p.release(id)
			}
		}()
	}
	wg.Wait()
	p.finishWG.Wait()
	if err := p.stopped(); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// backoff returns the wait before attempt n (1-based) of a transient
// failure: exponential from RetryBase, capped at RetryMax, with ±25 %
// jitter.
func (c *PipelineConfig) backoff(n int) time.Duration {
	d := c.RetryBase
	for i := 1; i < n && d < c.RetryMax; i++ {
		d *= 2
	}
	d = min(d, c.RetryMax)
	return d - d/4 + time.Duration(rand.Int64N(int64(d/2)+1))
}
