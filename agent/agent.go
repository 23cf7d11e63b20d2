// Package agent is gcingest's long-lived process: the watchers, one grouper
// per drop folder, the upload pipeline, the status listener, the folder
// locks and the pruning of old records, under one context, with the watch
// list replaced on reload (SIGHUP) without closing the state file.
//
// package main parses the command line and builds the config, the token and
// the logger; it hands them to New and runs the Agent.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/ingest"
	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/status"
)

// Options configure an Agent. Config, Token and Logger are required.
type Options struct {
	// Config is the config to start with; Run keeps it and never changes it
	// except through Reload.
	Config *config.Config
	// Token is the API token, resolved by the caller (the demo gives its
	// fake server's token whatever the environment holds).
	Token string
	// Logger is the one logger of the agent; each part scopes it.
	Logger *slog.Logger
	// Version is reported by the status endpoint and in the User-Agent.
	Version string
	// Reload, if non-nil, delivers configs re-read on SIGHUP. Each is
	// checked while the running watchers and pipeline keep working; only
	// one that passes replaces the watch list.
	Reload <-chan *config.Config
	// Ready, if non-nil, is called each time the agent is up: at start and
	// after each accepted reload.
	Ready func(Info)
	// Progress, if non-nil, hears of upload progress (the live display of
	// `gcingest run` at a terminal).
	Progress func(ingest.ProgressEvent)
}

// Info describes a running generation of the agent to Options.Ready.
type Info struct {
	Pipeline *ingest.Pipeline
	Client   *gcapi.Client
	// DICOM reports the DICOM listeners' counters now, as status and
	// /metrics show them: the live display draws the incoming series from
	// them. Safe to call from any goroutine until Run returns; nil when
	// the config has no [[dicom]] table.
	DICOM func() []status.Listener
}

// ConfigError is a config the agent cannot run with: a missing drop folder,
// folders that overlap once symlinks are resolved, an archive or interface
// the server does not have, a taken status port. The caller reports it as a
// configuration mistake (exit code 2), not as a runtime failure.
type ConfigError struct{ Err error }

// Error returns the wrapped error's message, which names the config key.
func (e *ConfigError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *ConfigError) Unwrap() error { return e.Err }

// Agent runs the watch → grouper → pipeline loop. Make one with New.
type Agent struct {
	opts Options
}

// New checks opts and returns an Agent ready to Run.
func New(opts Options) (*Agent, error) {
	if opts.Config == nil {
		return nil, errors.New("agent: no config")
	}
	if opts.Logger == nil {
		return nil, errors.New("agent: no logger")
	}
	return &Agent{opts: opts}, nil
}

// Run runs the watchers, the pipeline, the status listener and a DICOM
// receiver per [[dicom]] table (writing into its spool watch) until ctx is
// done, and returns nil then. It returns an error when the agent cannot
// start (*ConfigError for a config mistake, state.ErrLocked when another
// agent holds the state file, a *folderlock.HeldError for a drop folder)
// or must stop: the pipeline failed, or the server refused the token
// (wrapping gcapi.ErrUnauthorized). A config received on Reload that passes
// its checks replaces the watch list: the watchers and the pipeline are
// stopped (in-flight steps park as on any stop) and started again, while
// the state file, the status listener and the DICOM listeners stay open
// (with a changed allow list applied; any other change to a [[dicom]]
// table waits for a restart). Every goroutine Run
// starts has returned when Run returns.
func (a *Agent) Run(ctx context.Context) error {
	cfg, log := a.opts.Config, a.opts.Logger
	// The start-up `gcingest check` runs too: what it finds wrong there
	// is what stops run here, in the same words.
	client, err := NewClient(cfg, a.opts.Token, a.opts.Version, log)
	if err != nil {
		return err
	}
	locks := newFolderLocks(cfg.State.Path, log)
	defer locks.close()
	start := &Startup{Config: cfg, Client: client, Hold: true, locks: locks, Note: logFinding(log)}
	defer start.Close()
	if err := start.Run(ctx); err != nil {
		return err
	}
	st := start.state

	metrics := status.NewMetrics()
	r := &runner{
		opts:    a.opts,
		st:      st,
		metrics: metrics,
		src:     &pipelineSource{started: time.Now(), metrics: metrics, st: st, version: a.opts.Version},
		locks:   locks,
	}
	if keep := time.Duration(cfg.State.Keep); keep > 0 {
		pctx, pcancel := context.WithCancel(ctx)
		pdone := make(chan struct{})
		go func() {
			defer close(pdone)
			pruneLoop(pctx, st, keep, pruneEvery, log)
		}()
		defer func() { pcancel(); <-pdone }()
	}
	if len(cfg.DICOM) > 0 {
		lns := start.dicom
		start.dicom = nil // the receivers close them
		nodes, stop, err := serveDICOM(ctx, cfg, lns, log)
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			return err
		}
		defer stop()
		r.src.dicom = nodes
	}
	if ln := start.listener; ln != nil {
		start.listener = nil // ServeListener closes it
		sctx, scancel := context.WithCancel(ctx)
		defer scancel()
		statusDone := make(chan error, 1)
		go func() { statusDone <- status.ServeListener(sctx, ln, r.src, metrics, log) }()
		defer func() { scancel(); <-statusDone }()
	}

	for {
		nc, err := r.runOnce(ctx, cfg)
		if err != nil || nc == nil {
			return err
		}
		log.Info("applying the reloaded watch list", "watches", len(nc.Watch))
		locks.keepOnly(nc)
		cfg = nc
	}
}

// runner is what one Run keeps across generations: the state file, the
// metrics, the status source and the folder locks. It is used by Run's
// goroutine only.
type runner struct {
	opts    Options
	st      *state.Store
	metrics *status.Metrics
	src     *pipelineSource
	locks   *folderLocks
}

// runOnce runs one generation of client, pipeline and watchers. It returns
// a new config when one arrived on reload and passed its checks, nil when
// ctx is done.
func (r *runner) runOnce(ctx context.Context, cfg *config.Config) (*config.Config, error) {
	log := r.opts.Logger
	// The client retries a failed request itself before a step sees the
	// error; the pipeline, made below, shows the image as retrying
	// meanwhile (ingest clientretry.go).
	var pipe atomic.Pointer[ingest.Pipeline]
	client, guard, err := newAgentClient(cfg, r.opts.Token, r.opts.Version, log, r.metrics,
		gcapi.WithRetry(gcapi.RetryPolicy{OnRetry: func(ctx context.Context, _, _ string, _ int, wait time.Duration, err error) {
			if p := pipe.Load(); p != nil {
				p.NoteRetry(ctx, wait, err)
			}
		}}))
	if err != nil {
		return nil, err
	}
	// The server was checked at start (Startup) or, for a reloaded
	// config, by checkReload.
	progress := r.opts.Progress
	p := ingest.NewPipeline(ingest.PipelineConfig{
		Watches:         r.locks.mark(Watches(cfg)),
		SpoolDir:        filepath.Join(filepath.Dir(cfg.State.Path), "spool"),
		Concurrency:     cfg.Upload.Concurrency,
		PartConcurrency: cfg.Upload.PartConcurrency,
		PartSize:        cfg.PartSizeBytes(),
		Progress: func(ev ingest.ProgressEvent) {
			if ev.Imported {
				r.metrics.UploadSucceeded(time.Now())
			}
			if progress != nil {
				progress(ev)
			}
		},
	}, r.st, client, log.With("part", "pipeline"))
	pipe.Store(p)
	r.src.setPipeline(p)

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
	for _, w := range Watches(cfg) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wlog := log.With("watch", w.Path)
			if err := runWatch(ctx, w, p, wlog, func(n int) { r.src.setUnknown(w.Path, n) }); err != nil {
				wlog.Error("watch stopped", "err", err)
			}
		}()
	}
	if r.opts.Ready != nil {
		info := Info{Pipeline: p, Client: client}
		if len(r.src.dicom) > 0 {
			info.DICOM = r.src.DICOMListeners
		}
		r.opts.Ready(info)
	}
	// A reloaded config is checked while this generation keeps working;
	// only one that passes stops it.
	var next *config.Config
	for refused := false; next == nil && !refused && ctx.Err() == nil; {
		select {
		case <-ctx.Done():
		case nc := <-r.opts.Reload:
			next = r.acceptReload(ctx, cfg, nc)
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

// acceptReload checks a config received on reload while the agent keeps
// running with cur, and returns the config to switch to, or nil to keep
// cur: a config naming a missing folder or an unknown archive must not stop
// an agent that was working. What SIGHUP cannot change (the state file, the
// status listener, the server) is kept from cur.
func (r *runner) acceptReload(ctx context.Context, cur, nc *config.Config) *config.Config {
	log := r.opts.Logger
	if nc.State.Path != cur.State.Path || nc.Status.Listen != cur.Status.Listen || nc.GrandChallenge != cur.GrandChallenge {
		log.Warn("SIGHUP applies the watch list and upload settings; changes to [state], [status] or [grand_challenge] take effect at the next restart")
		nc.State, nc.Status, nc.GrandChallenge = cur.State, cur.Status, cur.GrandChallenge
	}
	if !reflect.DeepEqual(nc.DICOM, cur.DICOM) {
		// Restarting a listener would abort the associations of senders
		// in mid-series: the listeners keep running, with the new allow
		// lists once the reload is accepted.
		var restart bool
		if nc.DICOM, restart = reloadDICOM(cur.DICOM, nc.DICOM); restart {
			log.Warn("SIGHUP changes only the allow lists of the DICOM listeners; other changes to [[dicom]] take effect at the next restart")
		}
	}
	// The running listeners write into their spool folders: the new watch
	// list must still upload them, as the start required.
	if err := nc.Validate(); err != nil {
		log.Error("SIGHUP: the new watch list is refused; keeping the running one", "err", err)
		return nil
	}
	if err := r.checkReload(ctx, nc); err != nil {
		if ctx.Err() == nil {
			log.Error("SIGHUP: the new watch list is refused; keeping the running one", "err", err)
		}
		return nil
	}
	if err := r.locks.acquire(nc); err != nil {
		log.Error("SIGHUP: the new watch list is refused; keeping the running one", "err", err)
		return nil
	}
	applyAllow(r.src.dicom, cur.DICOM, nc.DICOM, log)
	return nc
}

// checkReload checks a reloaded config's folders and, with the server, its
// archives and interfaces.
func (r *runner) checkReload(ctx context.Context, nc *config.Config) error {
	log := r.opts.Logger
	client, err := NewClient(nc, r.opts.Token, r.opts.Version, log)
	if err != nil {
		return err
	}
	// The start-up's checks of folders and server, as check makes them:
	// the state file, the locks and the status port stay the running
	// agent's.
	s := &Startup{Config: nc, Client: client, Note: logFinding(log)}
	s.checkFolders()
	if s.err != nil {
		return s.err
	}
	s.checkServer(ctx)
	return s.err
}

// logFinding logs the start-up's warnings, and what passed at debug level;
// a failure is not logged here: it is what Run returns.
func logFinding(log *slog.Logger) func(Finding) {
	return func(f Finding) {
		switch f.Level {
		case LevelWarn:
			log.Warn(f.Text)
		case LevelOK:
			log.Debug(f.Text)
		}
	}
}
