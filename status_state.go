package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/gcingest/gcingest/config"
	"strconv"
	"sync"
	"time"

	"github.com/gcingest/gcingest/ingest"
	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/status"
)

// statusFromState builds the status report from the state file, opened
// read-only, for `gcingest status` while no agent runs. A file held by a
// running agent fails with state.ErrLocked.
func statusFromState(path string) (*status.Report, error) {
	st, err := state.Open(path, state.Options{ReadOnly: true, Timeout: 500 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	imgs, err := st.List()
	if err != nil {
		return nil, fmt.Errorf("read state file %s: %w", path, err)
	}
	rep := &status.Report{Version: versionString(), Images: make([]status.Image, 0, len(imgs))}
	for _, img := range imgs {
		rep.Images = append(rep.Images, statusImage(img))
	}
	rep.CountStates()
	return rep, nil
}

// statusImage converts one state record for the status report. Bytes sent
// are those of the parts already accepted: all the state file knows.
func statusImage(img state.Image) status.Image {
	si := status.Image{
		ID:          strconv.FormatUint(img.ID, 10),
		Watch:       img.Watch,
		Key:         img.Key,
		Title:       img.Title,
		State:       string(img.State),
		ItemPK:      img.ItemPK,
		ImagePK:     img.ImagePK,
		Attempts:    img.Attempts,
		LastError:   img.LastError,
		NextAttempt: img.NextAttempt,
		Updated:     img.Updated,
		WaitingFor:  img.WaitingFor,
		Until:       img.Until,
	}
	for _, f := range img.Files {
		si.Files = append(si.Files, f.Rel)
	}
	for _, u := range img.Uploads {
		si.BytesTotal += u.Size
		if u.Completed {
			si.BytesSent += u.Size
			continue
		}
		for _, p := range u.Parts {
			si.BytesSent += p.Size
		}
	}
	if si.BytesTotal == 0 {
		for _, f := range img.Files {
			si.BytesTotal += f.Size
		}
	}
	return si
}

// retryInState sends images through the pipeline again while no agent
// runs: it opens the state file, marks them pending (moving files back from
// failed_dir), and the next `gcingest run` uploads them. No request is made.
func retryInState(ctx context.Context, cfg *config.Config, ids []string, failed bool) ([]string, error) {
	st, err := state.Open(cfg.State.Path, state.Options{Timeout: 500 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return retryIDs(ctx, storeRetrier{st}, ids, failed)
}

// retrier sends images through the pipeline again: the running pipeline,
// or (no agent running) the state file alone.
type retrier interface {
	Retry(ctx context.Context, ids []uint64) error
	RetryFailed(ctx context.Context) ([]uint64, error)
}

// storeRetrier retries on the state file alone; the next run does the work.
type storeRetrier struct{ st *state.Store }

func (r storeRetrier) Retry(ctx context.Context, ids []uint64) error {
	_, err := ingest.Retry(ctx, r.st, ids, nil)
	return err
}

func (r storeRetrier) RetryFailed(ctx context.Context) ([]uint64, error) {
	return ingest.RetryFailed(ctx, r.st, nil)
}

// pipelineSource serves the status endpoint (and POST /retry) from a
// running pipeline; the agent passes it to status.Serve.
type pipelineSource struct {
	mu      sync.Mutex
	p       *ingest.Pipeline // replaced when SIGHUP restarts the pipeline
	started time.Time
	metrics *status.Metrics // may be nil; queue depth and last success are set from each report
}

func (s *pipelineSource) setPipeline(p *ingest.Pipeline) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.p = p
}

func (s *pipelineSource) pipeline() *ingest.Pipeline {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p
}

// Report lists every image with the progress of uploads in flight.
func (s *pipelineSource) Report(ctx context.Context) (*status.Report, error) {
	p := s.pipeline()
	if p == nil {
		return nil, errors.New("the agent is starting")
	}
	snap, err := p.Snapshot(false)
	if err != nil {
		return nil, err
	}
	rep := &status.Report{Version: versionString(), Started: s.started, Images: make([]status.Image, 0, len(snap))}
	queued := 0
	for _, is := range snap {
		if !is.Active && (is.State == state.Pending || is.State == state.Retrying) {
			queued++
		}
		if !is.Finished.IsZero() && (is.State == state.Finished || is.State == state.Done) {
			s.metrics.UploadSucceeded(is.Finished)
		}
		si := statusImage(is.Image)
		if is.Active && is.BytesTotal > 0 {
			si.BytesSent, si.BytesTotal = is.BytesSent, is.BytesTotal
		}
		rep.Images = append(rep.Images, si)
	}
	s.metrics.SetQueueDepth(queued)
	rep.CountStates()
	return rep, nil
}

// Retry queues the images with ids, or every failed one.
func (s *pipelineSource) Retry(ctx context.Context, ids []string, failed bool) ([]string, error) {
	p := s.pipeline()
	if p == nil {
		return nil, errors.New("the agent is starting; try again in a moment")
	}
	return retryIDs(ctx, p, ids, failed)
}

// retryIDs retries the images with ids (decimal), or every failed one, and
// returns the IDs retried.
func retryIDs(ctx context.Context, p retrier, ids []string, failed bool) ([]string, error) {
	if failed {
		done, err := p.RetryFailed(ctx)
		out := make([]string, len(done))
		for i, id := range done {
			out[i] = strconv.FormatUint(id, 10)
		}
		return out, err
	}
	nums := make([]uint64, 0, len(ids))
	for _, id := range ids {
		n, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("image ID %q is not a number; the IDs are in the first column of gcingest status", id)
		}
		nums = append(nums, n)
	}
	if err := p.Retry(ctx, nums); err != nil {
		return nil, err
	}
	return ids, nil
}
