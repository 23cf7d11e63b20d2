package group

import (
	"errors"
	"path"
	"strings"
	"time"

	"github.com/gcingest/gcingest/complete"
)

// Completeness proofs (package complete) in the grouper: a file its own
// header proves cut holds its group back, whatever settle says, with a
// reason naming the file and both sizes, for IncompleteWait after its last
// change; then the group goes on, and the pipeline, which runs the same
// proof on the bytes it hashes, fails it with that reason (as a DICOM file
// cut for DICOMSettle does). A file longer than its header says, or broken,
// does not wait: no amount of waiting mends it, so it goes on after settle
// and fails there. Formats without a proof keep the settle rule alone.

// incompleteWait is the watch's IncompleteWait, never less than Settle; unset,
// DefaultIncompleteWait or 4 × Settle, whichever is longer, so that a long
// settle time does not make the default wait the shorter guess.
func (g *Grouper) incompleteWait() time.Duration {
	if w := g.w.IncompleteWait; w > 0 {
		return max(w, g.w.Settle)
	}
	return max(DefaultIncompleteWait, 4*g.w.Settle)
}

// proofReason says why f, proven cut by its own header, holds its group
// back, or "" when it does not.
func (g *Grouper) proofReason(f *fileState, now int64) string {
	if f.info == nil {
		return ""
	}
	var ie *complete.IncompleteError
	if !errors.As(f.info.proof, &ie) {
		return ""
	}
	return g.incompleteFor(f, path.Base(f.rel), f.info.proof, now)
}

// incompleteFor is the waiting reason of file f (shown as name), cut as err
// says, or "" once f has stayed so for IncompleteWait.
func (g *Grouper) incompleteFor(f *fileState, name string, err error, now int64) string {
	end := f.since + int64(g.incompleteWait())
	if now >= end && f.obs >= 2 {
		return "" // it stays cut: go on, to fail in the pipeline naming it
	}
	g.wakeAt(time.Unix(0, end))
	return incompleteText(name, err)
}

// incompleteText turns "incomplete (header says N bytes, file has M)" into
// "incomplete: ct.mha (header says N bytes, file has M)".
func incompleteText(name string, err error) string {
	return "incomplete: " + name + strings.TrimPrefix(err.Error(), "incomplete")
}
