package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/gcingest/gcingest/ingest"
	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/status"
)

// StatusFromState builds the status report from the state file at path,
// opened read-only, for `gcingest status` while no agent runs; version is
// the report's. A file held by a running agent fails with state.ErrLocked.
func StatusFromState(path string, q status.Query, version string) (*status.Report, error) {
	st, err := state.Open(path, state.Options{ReadOnly: true, Timeout: 500 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	rep, err := reportFrom(st, q, nil, version)
	if err != nil {
		return nil, fmt.Errorf("read state file %s: %w", path, err)
	}
	return rep, nil
}

// reportFrom builds a report of the images q selects, reading only those
// records (the state index finds them), with the counts of every state.
// active, if non-nil, gives the progress of images being uploaded now.
func reportFrom(st *state.Store, q status.Query, active map[uint64]ingest.ImageStatus, version string) (*status.Report, error) {
	counts, err := st.Counts()
	if err != nil {
		return nil, err
	}
	rep := &status.Report{Version: version, Images: []status.Image{}, Counts: map[string]int{}, Query: q}
	for s, n := range counts {
		rep.Counts[string(s)] = n
	}
	if counts[state.Failed] > 0 {
		failed, err := st.List(state.Failed)
		if err != nil {
			return nil, err
		}
		for _, img := range failed {
			if img.EmptyItem {
				rep.EmptyItems++
			}
		}
	}
	var imgs []state.Image
	if q.ID != "" {
		id, err := strconv.ParseUint(q.ID, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("image ID %q is not a number; the IDs are in the first column of gcingest status", q.ID)
		}
		img, err := st.Get(id)
		if errors.Is(err, state.ErrNotFound) {
			return rep, nil
		}
		if err != nil {
			return nil, err
		}
		imgs = []state.Image{img}
	} else {
		var states []state.State
		for _, s := range q.Selected() {
			states = append(states, state.State(s))
		}
		if imgs, err = st.List(states...); err != nil {
			return nil, err
		}
	}
	for _, img := range imgs {
		// Names are shown as the running agent's snapshot shows them, so
		// that both paths of `gcingest status` agree on a name that is not
		// valid UTF-8 (the record keeps its bytes).
		img = ingest.EscapedNames(img)
		si := statusImage(img)
		if is, ok := active[img.ID]; ok && is.Active && is.BytesTotal > 0 {
			si.BytesSent, si.BytesTotal, si.Hashing = is.BytesSent, is.BytesTotal, is.Hashing
		}
		if is, ok := active[img.ID]; ok && !is.ClientRetryAt.IsZero() {
			// The client is waiting out a failed request: the image waits
			// on the network or the server, whatever its record says.
			si.State, si.NextAttempt = status.StateRetrying, is.ClientRetryAt
			si.WaitingFor = "the server: a request of " + string(img.State) + " failed and is tried again"
			if si.LastError == "" {
				si.LastError = is.ClientRetryErr
			}
		}
		if q.ID != "" {
			si.Detail = statusDetail(img)
		}
		rep.Images = append(rep.Images, si)
	}
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
		EmptyItem:   img.EmptyItem,
	}
	for _, f := range img.Files {
		si.Files = append(si.Files, f.Rel)
	}
	for _, u := range img.Uploads {
		si.BytesTotal += u.Size
		si.BytesSent += uploadSent(u)
	}
	if si.BytesTotal == 0 {
		for _, f := range img.Files {
			si.BytesTotal += f.Size
		}
	}
	return si
}

func uploadSent(u state.Upload) int64 {
	if u.Completed {
		return u.Size
	}
	var n int64
	for _, p := range u.Parts {
		n += p.Size
	}
	return n
}

// statusDetail is one image's whole story for `gcingest status ID`.
func statusDetail(img state.Image) *status.Detail {
	d := &status.Detail{Kind: img.Kind, SessionPK: img.SessionPK, ImageURL: img.ImageURL, MovedTo: img.MovedTo,
		Created: img.Created, Finished: img.Finished, Files: []status.DetailFile{}}
	for _, f := range img.Files {
		d.Files = append(d.Files, status.DetailFile{Rel: f.Rel, Path: f.Path, Size: f.Size})
	}
	for _, u := range img.Uploads {
		d.Uploads = append(d.Uploads, status.DetailUpload{Filename: u.Filename, Size: u.Size, Sent: uploadSent(u), PK: u.PK, Completed: u.Completed})
	}
	for _, v := range img.Values {
		d.Values = append(d.Values, status.DetailValue{Interface: v.Interface, Kind: v.Kind, Files: v.Files, Confirmed: v.Confirmed})
	}
	for _, e := range img.Errors {
		d.Errors = append(d.Errors, status.ErrorNote{At: e.At, State: string(e.State), Msg: e.Msg})
	}
	return d
}

// RetryInState sends images through the pipeline again while no agent
// runs: it opens the state file at statePath, marks the images with ids
// (decimal), or every failed one, pending (moving files back from
// failed_dir), and the next `gcingest run` uploads them. No request is
// made. It returns the IDs retried.
func RetryInState(ctx context.Context, statePath string, ids []string, failed bool) ([]string, error) {
	st, err := state.Open(statePath, state.Options{Timeout: 500 * time.Millisecond})
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
	st      *state.Store
	started time.Time
	metrics *status.Metrics // may be nil; queue depth is set from each count
	version string          // the agent's, for the report
	unknown map[string]int  // files of unknown type, by watch path
	// dicom are the DICOM listeners, set before the status listener
	// starts and never changed.
	dicom []*dicomNode
}

// DICOMListeners reports the DICOM listeners' counters (status.DICOMSource).
func (s *pipelineSource) DICOMListeners() []status.Listener {
	if len(s.dicom) == 0 {
		return nil
	}
	return dicomListeners(s.dicom)
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

// setUnknown records how many files of unknown type a watch holds now.
func (s *pipelineSource) setUnknown(watch string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unknown == nil {
		s.unknown = map[string]int{}
	}
	if n == 0 {
		delete(s.unknown, watch)
		return
	}
	s.unknown[watch] = n
}

func (s *pipelineSource) unknownFiles() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.unknown)
}

// Report lists the images q selects, with the progress of uploads in
// flight; it reads only the records it lists.
func (s *pipelineSource) Report(ctx context.Context, q status.Query) (*status.Report, error) {
	p := s.pipeline()
	if p == nil {
		return nil, errors.New("the agent is starting")
	}
	rep, err := reportFrom(s.st, q, p.Active(), s.version)
	if err != nil {
		return nil, err
	}
	rep.Started = s.started
	rep.Unknown = s.unknownFiles()
	rep.DICOM = s.DICOMListeners()
	return rep, nil
}

// Counts serves /metrics from the state index, without reading records.
func (s *pipelineSource) Counts(ctx context.Context) (map[string]int, map[string]int, error) {
	counts, err := s.st.Counts()
	if err != nil {
		return nil, nil, err
	}
	out := make(map[string]int, len(counts))
	for st, n := range counts {
		out[string(st)] = n
	}
	if p := s.pipeline(); p != nil {
		// Images whose requests the client is retrying are retrying,
		// whatever their records say until a step ends.
		for st, n := range p.ClientRetrying() {
			out[string(st)] -= min(n, out[string(st)])
			out[status.StateRetrying] += n
		}
	}
	s.metrics.SetQueueDepth(out[status.StatePending] + out[status.StateRetrying])
	return out, s.unknownFiles(), nil
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
