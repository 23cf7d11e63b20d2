package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/ingest"
	"github.com/gcingest/gcingest/ingest/group"
	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/status"
	"github.com/gcingest/gcingest/watcher"
)

// agentInfo describes a running agent to whoever asked to be told when it is
// up (demo, the service adapter, tests).
type agentInfo struct {
	Pipeline *ingest.Pipeline
	Client   *gcapi.Client
}

// runAgent runs the watchers and pipeline until ctx is done. A config
// received on reload (SIGHUP) is checked first, while the running ones keep
// working; one that passes replaces the watch list: the watchers and the
// pipeline are stopped (in-flight steps park as on any stop) and started
// again with the new list, while the state file and the status listener stay
// open. ready, if non-nil, is called each time the agent is up. token is
// resolved by the caller (cli.token), so that the demo can give its fake
// server's token whatever the environment holds.
func runAgent(ctx context.Context, cfg *config.Config, token string, log *slog.Logger, reload <-chan *config.Config, ready func(a *agentInfo)) error {
	return runAgentProgress(ctx, cfg, token, log, reload, ready, nil)
}

// runAgentProgress is runAgent with a hook that hears of upload progress
// (the live display of `gcingest run` at a terminal); nil for none.
func runAgentProgress(ctx context.Context, cfg *config.Config, token string, log *slog.Logger, reload <-chan *config.Config, ready func(a *agentInfo), progress func(ingest.ProgressEvent)) error {
	if err := checkWatchFolders(cfg); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(cfg.State.Path), 0o750); err != nil {
		return fmt.Errorf("create the state folder for %s: %w", cfg.State.Path, err)
	}
	st, err := state.Open(cfg.State.Path, state.Options{})
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w; free disk space there and start gcingest again", err)
	}
	if err != nil {
		return err
	}
	defer st.Close()

	// After the state file's lock, so that a second agent on the same
	// state file hears about that first.
	locks := newFolderLocks(cfg.State.Path, log)
	defer locks.close()
	if err := locks.acquire(cfg); err != nil {
		return err
	}

	metrics := status.NewMetrics()
	src := &pipelineSource{started: time.Now(), metrics: metrics, st: st}
	if keep := time.Duration(cfg.State.Keep); keep > 0 {
		pctx, pcancel := context.WithCancel(ctx)
		pdone := make(chan struct{})
		go func() {
			defer close(pdone)
			pruneLoop(pctx, st, keep, pruneEvery, log)
		}()
		defer func() { pcancel(); <-pdone }()
	}
	var statusDone chan error
	if cfg.Status.Listen != "" {
		// Listen before anything else so a taken port fails at once.
		ln, err := status.Listen(cfg.Status.Listen)
		if err != nil {
			return &configError{fmt.Errorf("status.listen: %w", err)}
		}
		sctx, scancel := context.WithCancel(ctx)
		defer scancel()
		statusDone = make(chan error, 1)
		go func() { statusDone <- status.ServeListener(sctx, ln, src, metrics, log) }()
		defer func() { scancel(); <-statusDone }()
	}

	for {
		nc, err := runAgentOnce(ctx, cfg, token, st, metrics, src, log, reload, ready, locks, progress)
		if err != nil || nc == nil {
			return err
		}
		log.Info("applying the reloaded watch list", "watches", len(nc.Watch))
		locks.keepOnly(nc)
		cfg = nc
	}
}

// acceptReload checks a config received on SIGHUP while the agent keeps
// running with cur, and returns the config to switch to, or nil to keep
// cur: a config naming a missing folder or an unknown archive must not stop
// an agent that was working. What SIGHUP cannot change (the state file, the
// status listener, the server) is kept from cur.
func acceptReload(ctx context.Context, cur, nc *config.Config, token string, log *slog.Logger, locks *folderLocks) *config.Config {
	if nc.State.Path != cur.State.Path || nc.Status.Listen != cur.Status.Listen || nc.GrandChallenge != cur.GrandChallenge {
		log.Warn("SIGHUP applies the watch list and upload settings; changes to [state], [status] or [grand_challenge] take effect at the next restart")
		nc.State, nc.Status, nc.GrandChallenge = cur.State, cur.Status, cur.GrandChallenge
	}
	if err := checkReload(ctx, nc, token, log); err != nil {
		if ctx.Err() == nil {
			log.Error("SIGHUP: the new watch list is refused; keeping the running one", "err", err)
		}
		return nil
	}
	if err := locks.acquire(nc); err != nil {
		log.Error("SIGHUP: the new watch list is refused; keeping the running one", "err", err)
		return nil
	}
	return nc
}

// checkWatchFolders refuses a drop folder missing at start: a mistake in the
// config. One that goes away later (an unmounted share) is waited for by its
// watcher.
func checkWatchFolders(cfg *config.Config) error {
	for i, w := range cfg.Watch {
		fi, err := os.Stat(w.Path)
		if err == nil && !fi.IsDir() {
			err = errors.New("it is a file")
		}
		if err != nil {
			return &configError{fmt.Errorf("watch[%d].path: %s is not a folder this user can see (%w): create it, mount the share, or fix the path", i, w.Path, err)}
		}
	}
	return checkResolvedFolders(cfg)
}

// checkReload checks a reloaded config's folders and, with the server, its
// archives and interfaces.
func checkReload(ctx context.Context, nc *config.Config, token string, log *slog.Logger) error {
	if err := checkWatchFolders(nc); err != nil {
		return err
	}
	client, err := newAPIClient(nc, token, log, nil)
	if err != nil {
		return err
	}
	return verifyServer(ctx, client, nc, log)
}

// runAgentOnce runs one generation of client, pipeline and watchers. It
// returns a new config when one arrived on reload, nil when ctx is done.
func runAgentOnce(ctx context.Context, cfg *config.Config, token string, st *state.Store, metrics *status.Metrics,
	src *pipelineSource, log *slog.Logger, reload <-chan *config.Config, ready func(*agentInfo), locks *folderLocks,
	progress func(ingest.ProgressEvent)) (*config.Config, error) {
	client, guard, err := newAgentClient(cfg, token, log, metrics)
	if err != nil {
		return nil, err
	}
	if err := verifyServer(ctx, client, cfg, log); err != nil {
		return nil, err
	}
	p := ingest.NewPipeline(ingest.PipelineConfig{
		Watches:         locks.mark(watches(cfg)),
		SpoolDir:        filepath.Join(filepath.Dir(cfg.State.Path), "spool"),
		Concurrency:     cfg.Upload.Concurrency,
		PartConcurrency: cfg.Upload.PartConcurrency,
		PartSize:        cfg.PartSizeBytes(),
		Progress: func(ev ingest.ProgressEvent) {
			if ev.Imported {
				metrics.UploadSucceeded(time.Now())
			}
			if progress != nil {
				progress(ev)
			}
		},
	}, st, client, log.With("part", "pipeline"))
	src.setPipeline(p)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var runErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := p.Run(ctx); err != nil {
			runErr = err
			cancel()
		}
	}()
	for _, w := range watches(cfg) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wlog := log.With("watch", w.Path)
			if err := runWatch(ctx, w, p, wlog, func(n int) { src.setUnknown(w.Path, n) }); err != nil {
				wlog.Error("watch stopped", "err", err)
			}
		}()
	}
	if ready != nil {
		ready(&agentInfo{Pipeline: p, Client: client})
	}
	// A reloaded config is checked while this generation keeps working;
	// only one that passes stops it.
	var next *config.Config
	for refused := false; next == nil && !refused && ctx.Err() == nil; {
		select {
		case <-ctx.Done():
		case nc := <-reload:
			next = acceptReload(ctx, cfg, nc, token, log, locks)
		case <-guard.refused:
			refused = true
		}
	}
	cancel()
	wg.Wait()
	if runErr != nil {
		return nil, fmt.Errorf("pipeline stopped: %w", runErr)
	}
	if err := guard.Err(); err != nil {
		return nil, fmt.Errorf("stopping: the server refused the token: %w", err)
	}
	return next, nil
}

// verifyTimeout bounds the start-up check of the server.
const verifyTimeout = 90 * time.Second

// verifyServer checks, before any work starts, that the token works and each
// watch's archive and interface exist. A permanent answer (401, 404) stops the
// agent with a message naming the key. A network failure does not: a service
// started at boot may come up before the network, and the pipeline retries on
// its own.
func verifyServer(ctx context.Context, c *gcapi.Client, cfg *config.Config, log *slog.Logger) error {
	// A server that answers a byte at a time must not hold the start for
	// the client's whole retry budget (minutes per call): past this, the
	// agent starts and the pipeline waits for the server as on any outage.
	vctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	for i, w := range cfg.Watch {
		if _, err := c.ArchiveBySlug(vctx, w.Archive); err != nil {
			switch {
			case ctx.Err() != nil:
				return nil
			case gcapi.IsTransient(err) || !gcapi.IsPermanent(err):
				log.Warn("cannot reach the server to check the archive; starting anyway, uploads wait for the server", "archive", w.Archive, "err", err)
				return nil
			case gcapi.IsNotFound(err):
				return &configError{fmt.Errorf("watch[%d].archive: no archive %q is visible to this token: check the slug and that the account is an editor or uploader of the archive: %w", i, w.Archive, err)}
			}
			return fmt.Errorf("watch[%d].archive %q: %w", i, w.Archive, err)
		}
		iface, err := c.InterfaceBySlug(vctx, w.Interface)
		if err != nil {
			if gcapi.IsNotFound(err) {
				return &configError{fmt.Errorf("watch[%d].interface: the server has no interface (socket) %q: check the slug: %w", i, w.Interface, err)}
			}
			if gcapi.IsPermanent(err) {
				return fmt.Errorf("watch[%d].interface %q: %w", i, w.Interface, err)
			}
			log.Warn("cannot reach the server to check the interface; starting anyway", "interface", w.Interface, "err", err)
			return nil
		}
		if iface.SuperKind != gcapi.SuperKindImage {
			return &configError{fmt.Errorf("watch[%d].interface: %q is a %s socket (kind %q), but the watch's main image needs an image socket", i, w.Interface, iface.SuperKind, iface.Kind)}
		}
		if iface.Kind == ingest.KindDICOMImageSet {
			if err := ingest.DeidTitleProblem(w.Title); err != nil {
				return &configError{fmt.Errorf("watch[%d].title: %w (the interface %q is a DICOM Image Set, always de-identified); use \"{hash}\" and fixed text, or leave title unset", i, err, w.Interface)}
			}
		}
		for pattern, slug := range w.Values {
			if _, err := c.InterfaceBySlug(vctx, slug); gcapi.IsNotFound(err) {
				return &configError{fmt.Errorf("watch[%d].values %q: the server has no interface (socket) %q: check the slug: %w", i, pattern, slug, err)}
			}
		}
	}
	return nil
}

// submitRetry is how long ready images wait before they are offered again to
// a pipeline that could not record them (a full disk under the state file).
const submitRetry = 10 * time.Second

// runWatch feeds one folder's notices to its grouper and the ready groups to
// the pipeline, until ctx is done. This goroutine owns the grouper.
// setUnknown is told how many files of unknown type the folder holds after
// each look.
func runWatch(ctx context.Context, w ingest.Watch, p *ingest.Pipeline, log *slog.Logger, setUnknown func(int)) error {
	wt, err := watcher.New(watcher.Options{Root: w.Path, Rescan: w.Rescan, Poll: w.Poll, Logger: log})
	if err != nil {
		return err
	}
	batches := make(chan watcher.Batch, 8)
	wctx, wcancel := context.WithCancel(ctx)
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		if err := wt.Run(wctx, batches); err != nil {
			log.Error("watcher stopped", "err", err)
		}
	}()
	defer func() { wcancel(); <-wdone }()

	ingest.LogDeidentification(log, w)
	g := group.NewGrouper(w.Grouping(), log)
	var unsubmitted []ingest.Group
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case b := <-batches:
			now := time.Now()
			if b.FullScan {
				g.BeginScan()
			}
			for _, ev := range b.Events {
				g.Observe(ev.Path, ev.Info, now)
			}
			if b.FullScan {
				g.EndScan(now)
				log.Debug("rescan done", "files", g.Len())
			}
		case <-timer.C:
		}
		unsubmitted = append(unsubmitted, g.Ready(time.Now())...)
		setUnknown(g.Unknown())
		if len(unsubmitted) > 0 {
			// Recorded together, in one commit: a backlog found at start
			// costs one fsync, not one per image.
			var again []ingest.Group
			var stopErr error
			for i, err := range p.SubmitAll(ctx, unsubmitted) {
				switch {
				case err == nil:
				case ctx.Err() != nil:
					return nil
				case errors.Is(err, ingest.ErrStopped):
					again, stopErr = append(again, unsubmitted[i]), err
				default:
					// Refused for what it is: waiting will not change that.
					log.Error("image not accepted", "key", unsubmitted[i].Key, "err", err)
				}
			}
			if len(again) > 0 {
				log.Error("cannot record ready images; they will be offered again", "images", len(again), "first", again[0].Key, "retry_in", submitRetry, "err", stopErr)
			}
			unsubmitted = again
		}
		d := time.Hour
		if wake := g.NextWake(); !wake.IsZero() {
			d = max(time.Until(wake), 10*time.Millisecond)
		}
		if len(unsubmitted) > 0 {
			d = min(d, submitRetry)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(d)
	}
}
