package ingest

import (
	"strconv"
	"unicode/utf8"

	"github.com/gcingest/gcingest/state"
)

// ImageStatus is one image as the status endpoint shows it.
type ImageStatus struct {
	state.Image
	BytesSent  int64 `json:"bytes_sent,omitempty"`  // of the uploads in flight
	BytesTotal int64 `json:"bytes_total,omitempty"` // of the uploads in flight
	Active     bool  `json:"active,omitempty"`      // a worker is on it now
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
			out[i].BytesSent, out[i].BytesTotal = pr.sent, pr.total
		}
	}
	return out, nil
}

func (p *Pipeline) setProgress(id uint64, sent, total int64) {
	p.mu.Lock()
	if pr, ok := p.active[id]; ok {
		pr.sent, pr.total = sent, total
	}
	p.mu.Unlock()
}

func (p *Pipeline) addProgress(id uint64, n int64) {
	p.mu.Lock()
	if pr, ok := p.active[id]; ok {
		pr.sent += n
	}
	p.mu.Unlock()
}

// EscapedNames returns img for showing: its key, watch, moved-to folder
// and file names that are not valid UTF-8 are escaped the way Go quotes
// them ("scan-\xff.mha"), instead of turning into U+FFFD when encoded as
// JSON; valid names are left as they are. The record itself keeps the
// bytes.
func EscapedNames(img state.Image) state.Image {
	img.Key, img.Watch, img.MovedTo = escapeName(img.Key), escapeName(img.Watch), escapeName(img.MovedTo)
	if img.RawNames == nil {
		return img
	}
	img.Files = append([]state.File(nil), img.Files...)
	for i := range img.Files {
		img.Files[i].Rel, img.Files[i].Path = escapeName(img.Files[i].Rel), escapeName(img.Files[i].Path)
	}
	img.RawNames = nil
	return img
}

func escapeName(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}
