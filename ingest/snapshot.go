package ingest

import (
	"time"
	"unicode/utf8"

	"github.com/gcingest/gcingest/printable"
	"github.com/gcingest/gcingest/state"
)

// ImageStatus is one image as the status endpoint shows it.
type ImageStatus struct {
	state.Image
	BytesSent  int64 `json:"bytes_sent,omitempty"`  // of the uploads in flight
	BytesTotal int64 `json:"bytes_total,omitempty"` // of the uploads in flight
	Active     bool  `json:"active,omitempty"`      // a worker is on it now
	// Hashing says BytesSent counts the bytes the hash step has read of
	// the files (BytesTotal), before anything is sent.
	Hashing bool `json:"hashing,omitempty"`
	// ClientRetryAt, when set, is when the client tries a request of this
	// image again after ClientRetryErr: the image waits on the network or
	// the server although its record says what it was doing.
	ClientRetryAt  time.Time `json:"client_retry_at,omitzero"`
	ClientRetryErr string    `json:"client_retry_error,omitempty"`
}

// Snapshot returns every image recorded, with upload progress for those in
// flight. With unfinishedOnly, finished ones are left out.
func (p *Pipeline) Snapshot(unfinishedOnly bool) ([]ImageStatus, error) {
	var imgs []state.Image
	var err error
	if unfinishedOnly {
		imgs, err = p.store.Unfinished()
	} else {
		imgs, err = p.store.List()
	}
	if err != nil {
		return nil, err
	}
	out := make([]ImageStatus, len(imgs))
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, img := range imgs {
		out[i].Image = EscapedNames(img)
		if pr, ok := p.active[img.ID]; ok {
			out[i].Active = true
			out[i].BytesSent, out[i].BytesTotal, out[i].Hashing = pr.sent, pr.total, pr.hashed
			if r, ok := p.retries.get(img.ID); ok {
				out[i].ClientRetryAt, out[i].ClientRetryErr = r.next, r.err
			}
		}
	}
	return out, nil
}

// Active returns, by ID, the progress of the images a worker is on now,
// without reading a record: what status adds to the records it prints.
// (Snapshot decodes every unfinished record: a monitor asking /status
// often cost a backlog a tenth of the agent's CPU.)
func (p *Pipeline) Active() map[uint64]ImageStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[uint64]ImageStatus, len(p.active))
	for id, pr := range p.active {
		is := ImageStatus{Active: true, BytesSent: pr.sent, BytesTotal: pr.total, Hashing: pr.hashed}
		is.ID = id
		if r, ok := p.retries.get(id); ok {
			is.ClientRetryAt, is.ClientRetryErr = r.next, r.err
		}
		out[id] = is
	}
	return out
}

// hashProgress records that the hash step read n more bytes of img's
// total: for status only, not the live display's upload rates.
func (p *Pipeline) hashProgress(id uint64, n, total int64) {
	p.mu.Lock()
	if pr, ok := p.active[id]; ok {
		pr.sent, pr.total, pr.hashed = pr.sent+n, total, true
	}
	p.mu.Unlock()
}

func (p *Pipeline) setProgress(img *state.Image, sent, total int64) {
	p.mu.Lock()
	pr, ok := p.active[img.ID]
	if ok {
		pr.sent, pr.total, pr.key, pr.hashed = sent, total, img.Key, false
	}
	p.mu.Unlock()
	if ok && p.cfg.Progress != nil {
		p.cfg.Progress(ProgressEvent{ID: img.ID, Key: img.Key, Sent: sent, Total: total})
	}
}

func (p *Pipeline) addProgress(id uint64, n int64) {
	p.mu.Lock()
	pr, ok := p.active[id]
	var ev ProgressEvent
	if ok {
		pr.sent += n
		ev = ProgressEvent{ID: id, Key: pr.key, Sent: pr.sent, Total: pr.total, Delta: n}
	}
	p.mu.Unlock()
	if ok && p.cfg.Progress != nil {
		p.cfg.Progress(ev)
	}
}

// ProgressEvent is one report to PipelineConfig.Progress: an image's
// uploads as bytes are sent, and its import.
type ProgressEvent struct {
	ID  uint64
	Key string // the image's group key within its watch
	// Sent and Total are the bytes of the image's uploads sent so far
	// (parts the server already held included) and in all.
	Sent, Total int64
	// Delta is the bytes just sent; 0 on the first report of an upload
	// step, which gives Sent from what the state file records.
	Delta int64
	// Imported is set on the one event of an image whose values the item
	// shows (done); Sent and Total are zero then.
	Imported bool
}

// EscapedNames returns img for showing: its key, watch, moved-to folder
// and file names (of the image and of its values) that are not valid UTF-8
// are escaped by printable.String ("scan-\xff.mha"), instead of turning
// into U+FFFD when encoded as JSON; valid names are left as they are, for
// JSON escapes their control characters itself and a script reading
// --json gets the exact name. Text for people is escaped where it is
// written (status.Report.WriteTable). The record itself keeps the bytes.
func EscapedNames(img state.Image) state.Image {
	img.Key, img.Watch, img.MovedTo = escapeName(img.Key), escapeName(img.Watch), escapeName(img.MovedTo)
	if img.RawNames == nil {
		return img
	}
	img.Files = append([]state.File(nil), img.Files...)
	for i := range img.Files {
		img.Files[i].Rel, img.Files[i].Path = escapeName(img.Files[i].Rel), escapeName(img.Files[i].Path)
	}
	img.Values = append([]state.Value(nil), img.Values...)
	for i := range img.Values {
		files := make([]string, len(img.Values[i].Files))
		for j, f := range img.Values[i].Files {
			files[j] = escapeName(f)
		}
		img.Values[i].Files = files
	}
	img.RawNames = nil
	return img
}

// escapeName escapes a name that JSON could not carry; see EscapedNames.
func escapeName(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return printable.String(s)
}
