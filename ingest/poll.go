package ingest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/watch"
)

// maxResend is how often an image's uploads are sent again after the
// server lost them (expired before an import took them) before the image
// fails: once heals an agent stopped for a day, twice one stopped again
// before the import; more would be a loop (uploads consumed by an import
// whose failure we could not read look the same).
const maxResend = 2

// maxImportWaits bounds the wait for an import the server reports still
// running, in ImportTimeouts: a session stuck for a day is not coming.
const maxImportWaits = 8

// importPolls follows the images whose PATCH was sent: how often each
// item was polled (the sessions are read at the first polls and every
// tenth after, stepPoll), when each was last looked at, and, by how many
// it holds, how many images import at once (itemNow lists the archive
// when many do). No other state changes with it, so it has its own lock.
type importPolls struct {
	mu     sync.Mutex
	polls  map[uint64]int       // polls so far, by image id
	looked map[uint64]time.Time // when each item was last looked at
}

func newImportPolls() *importPolls {
	return &importPolls{polls: map[uint64]int{}, looked: map[uint64]time.Time{}}
}

// begin counts id as importing, its polls from zero: its PATCH was sent.
func (ip *importPolls) begin(id uint64) {
	ip.mu.Lock()
	ip.polls[id] = 0
	ip.mu.Unlock()
}

// poll counts a poll of id and returns how many came before it.
func (ip *importPolls) poll(id uint64) int {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	n := ip.polls[id]
	ip.polls[id] = n + 1
	return n
}

// look notes that id's item is looked at now and returns when it was
// last looked at, and how many images are importing.
func (ip *importPolls) look(id uint64, now time.Time) (last time.Time, importing int) {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	last = ip.looked[id]
	ip.looked[id] = now
	return last, len(ip.polls)
}

// stop counts id as importing no more (its uploads go again); when it
// was last looked at is kept for its next import.
func (ip *importPolls) stop(id uint64) {
	ip.mu.Lock()
	delete(ip.polls, id)
	ip.mu.Unlock()
}

// forget drops id: imported, or failed.
func (ip *importPolls) forget(id uint64) {
	ip.mu.Lock()
	delete(ip.polls, id)
	delete(ip.looked, id)
	ip.mu.Unlock()
}

// stepPoll looks once at an importing item: done when it shows every
// value. Otherwise each image value's outcome is read from its upload
// session, and past the image's deadline (Until) the agent goes back to the
// server's truth (deadline).
func (p *Pipeline) stepPoll(ctx context.Context, img *state.Image) error {
	_, done, err := p.look(ctx, img)
	if err != nil || done {
		return err
	}
	n := p.imports.poll(img.ID)
	// The item is looked at every cycle, so an image is seen done within
	// one cycle of its import finishing; its sessions (a failure, and
	// which session is ours) at the first polls, while they still name
	// our uploads, and every tenth after: a failure seen a few cycles
	// late costs nothing, and a request per session per cycle would
	// double what a waiting image asks of the server.
	if n < 3 || n%10 == 9 {
		if _, err := p.readSessions(ctx, img, true); err != nil {
			return err
		}
	}
	now := p.cfg.Now()
	if img.Until.IsZero() {
		// A record from before deadlines were kept.
		until := img.PatchSentAt.Add(p.cfg.ImportTimeout)
		if err := p.save(img, func(r *state.Image) { r.Until, r.WaitingFor = until, waitingForImport(r) }); err != nil {
			return err
		}
	}
	if now.After(img.Until) {
		return p.deadline(ctx, img)
	}
	// A short, fixed cycle: with many images importing, one listing of
	// the archive per cycle serves them all (itemNow).
	return &waitError{at: now.Add(p.cfg.PollInterval)}
}

// waitingForImport says what an importing image waits for, for status.
func waitingForImport(img *state.Image) string {
	var open []string
	for _, v := range img.Values {
		if !v.Confirmed {
			open = append(open, v.Interface)
		}
	}
	return "the server to attach " + strings.Join(open, ", ") + " to archive item " + img.ItemPK
}

// look gets the item and confirms the values it shows (confirmValues); done
// says every value is there and the item was finished.
func (p *Pipeline) look(ctx context.Context, img *state.Image) (it *gcapi.ArchiveItem, done bool, err error) {
	w, err := p.watchOf(img)
	if err != nil {
		return nil, false, err
	}
	if it, err = p.itemNow(ctx, img, w); err != nil {
		return nil, false, err
	}
	done, err = p.confirmValues(ctx, img, w, it)
	return it, done, err
}

// listFrom is how many images must be importing at once, per page of the
// archive's listing, before their items are read from one listing of the
// archive per poll cycle instead of one GET each: below it a GET per image
// is cheaper than listing the archive (a page is up to listPage items with
// their values, the server's max_limit, grand-challenge.org
// app/grandchallenge/core/pagination.py).
const (
	listFrom = 16
	listPage = 1000
)

// itemNow returns the image's item as the server shows it after the
// image's last look: from the archive's listing when many images import
// at once (one listing per cycle serves them all), else by its pk.
func (p *Pipeline) itemNow(ctx context.Context, img *state.Image, w Watch) (*gcapi.ArchiveItem, error) {
	last, importing := p.imports.look(img.ID, p.cfg.Now())
	if importing >= listFrom && img.State == state.Importing {
		ar, err := p.server.archive(ctx, archiveSlug(img, w))
		if err != nil {
			return nil, err
		}
		it, err := p.server.listedItem(ctx, ar, img.ItemPK, maxTime(last, img.PatchSentAt), importing)
		if err != nil {
			return nil, err
		}
		if it != nil {
			return it, nil
		}
	}
	it, err := p.api.ArchiveItem(ctx, img.ItemPK)
	if err != nil {
		return nil, fmt.Errorf("get archive item %s: %w", img.ItemPK, err)
	}
	return it, nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// readSessions links each open image value to the upload session importing
// it (capture: only the session list, while the session still names our
// uploads, tells which it is) and reads the linked ones: a Failed session is
// the image's permanent failure, with the server's message. It returns the
// interfaces whose import is still running on the server.
func (p *Pipeline) readSessions(ctx context.Context, img *state.Image, capture bool) (building []string, err error) {
	values := state.CloneValues(img.Values)
	ours := map[string]int{} // upload pk → value index
	for i := range values {
		v := &values[i]
		if v.Confirmed || v.Kind != state.ValueImage {
			continue
		}
		if v.SessionPK == "" && img.SessionPK != "" && len(values) == 1 {
			v.SessionPK = img.SessionPK // a record from before sessions were kept per value
		}
		if v.SessionPK != "" {
			continue
		}
		for _, u := range v.Uploads {
			if pk := img.Uploads[u].PK; pk != "" {
				ours[pk] = i
			}
		}
	}
	changed := false
	if capture && len(ours) > 0 {
		// Begun after the last commit, which followed the PATCH's answer.
		sessions, err := p.server.sessionList(ctx, img.Updated)
		if err != nil {
			return nil, err
		}
		for _, se := range sessions {
			for _, pk := range se.UserUploads {
				if i, ok := ours[pk]; ok && values[i].SessionPK == "" {
					values[i].SessionPK, changed = se.PK, true
				}
			}
		}
	}
	for i := range values {
		v := &values[i]
		if v.Confirmed || v.SessionPK == "" {
			continue
		}
		se, err := p.api.UploadSession(ctx, v.SessionPK)
		if err != nil {
			return nil, fmt.Errorf("get upload session %s of %s: %w", v.SessionPK, v.Interface, err)
		}
		switch se.Status {
		case gcapi.SessionFailed, gcapi.SessionCancelled:
			return nil, &importError{msg: fmt.Sprintf("the server could not import the image for %s (upload session %s): %s",
				v.Interface, se.PK, se.ErrorMessage)}
		default:
			// Queued, started, or Succeeded with the image not yet linked
			// to the item (the linked task runs after the build).
			building = append(building, v.Interface)
		}
	}
	if changed {
		if err := p.save(img, func(r *state.Image) { r.Values = values }); err != nil {
			return nil, err
		}
	}
	return building, nil
}

// deadline goes back to the server's truth once an import took longer than
// ImportTimeout: a value whose session is still running waits another
// ImportTimeout; one whose uploads are gone (expired before an import took
// them) is sent again to the same item; one whose uploads are still there,
// unconsumed, was refused by the server with only a notification (a file
// copy that failed): the image fails, saying where to look.
func (p *Pipeline) deadline(ctx context.Context, img *state.Image) error {
	building, err := p.readSessions(ctx, img, true)
	if err != nil {
		return err // a session found now may have failed
	}
	var lost []int
	var unattached []string
	for i, v := range img.Values {
		if v.Confirmed || v.SessionPK != "" {
			continue
		}
		if v.Kind == state.ValueJSON {
			unattached = append(unattached, v.Interface)
			continue
		}
		gone := false
		for _, u := range v.Uploads {
			_, err := p.api.Upload(ctx, img.Uploads[u].PK)
			if gcapi.IsNotFound(err) {
				gone = true
				continue
			}
			if err != nil {
				return fmt.Errorf("check upload %s of %s: %w", img.Uploads[u].PK, v.Interface, err)
			}
		}
		if gone {
			lost = append(lost, i)
		} else {
			unattached = append(unattached, v.Interface)
		}
	}
	due := img.PatchSentAt.Add(p.cfg.ImportTimeout)
	switch {
	case p.cfg.Now().Before(due) && (len(unattached) > 0 || len(lost) > 0):
		// Looked at early (gcingest retry): an import may still take
		// these; wait for the real deadline before judging.
		return p.save(img, func(r *state.Image) { r.Until = due })
	case len(unattached) > 0:
		return &importError{msg: fmt.Sprintf("%s not attached to archive item %s %s after the uploads were sent; "+
			"the server refused it without an error we can read: see your notifications on Grand Challenge",
			strings.Join(unattached, ", "), img.ItemPK, p.cfg.ImportTimeout)}
	case len(lost) > 0 && img.Resent >= maxResend:
		var names []string
		for _, i := range lost {
			names = append(names, img.Values[i].Interface)
		}
		return &importError{msg: fmt.Sprintf("%s not attached to archive item %s: its uploads are gone and sending them "+
			"again %d times did not help; see your notifications on Grand Challenge", strings.Join(names, ", "), img.ItemPK, img.Resent)}
	case len(lost) > 0:
		return p.resend(img, lost, "its uploads are gone from the server before an import took them (expired)")
	}
	if limit := maxImportWaits * p.cfg.ImportTimeout; p.cfg.Now().Sub(img.PatchSentAt) > limit {
		return &importError{msg: fmt.Sprintf("the server's import of %s has not finished %s after the uploads were attached "+
			"(archive item %s); ask the Grand Challenge admins about it, then gcingest retry", strings.Join(building, ", "), limit, img.ItemPK)}
	}
	until := p.cfg.Now().Add(p.cfg.ImportTimeout)
	p.log.Warn("import still running on the server; waiting longer", "id", img.ID, "item", img.ItemPK, "values", building)
	if err := p.save(img, func(r *state.Image) {
		r.Until = until
		r.WaitingFor = "the server's import of " + strings.Join(building, ", ") + " (still running)"
		r.LastError = fmt.Sprintf("the import has not finished %s after the uploads were attached; still waiting", p.cfg.ImportTimeout)
	}); err != nil {
		return err
	}
	return &waitError{at: p.cfg.Now().Add(p.cfg.PollMax)}
}

// resend sends the uploads of the given values again, to the same item:
// the server lost them (expired after 24 h) before an import took them.
// The item pk is kept; values already on the item stay confirmed.
func (p *Pipeline) resend(img *state.Image, lost []int, why string) error {
	p.log.Warn("sending uploads again", "id", img.ID, "item", img.ItemPK, "why", why)
	p.imports.stop(img.ID)
	return p.save(img, func(r *state.Image) {
		for _, i := range lost {
			v := &r.Values[i]
			v.SessionPK, v.Confirmed = "", false
			for _, u := range v.Uploads {
				up := &r.Uploads[u]
				up.IntentAt, up.PK, up.S3UploadID, up.APIURL = time.Time{}, "", "", ""
				up.Created, up.Parts, up.Completed = time.Time{}, nil, false
			}
		}
		r.SessionPK = ""
		r.State, r.Resent = state.Uploading, r.Resent+1
		r.PatchSentAt, r.Until, r.WaitingFor = time.Time{}, time.Time{}, ""
		r.LastError = why + "; sent again to archive item " + r.ItemPK
	})
}

// markDone records the imported image.
//
// Keep and delete need no record of their own: the action comes first and
// is idempotent (a deleted file is gone), so done, the action and finished
// are one commit; if the process dies between the action and the commit,
// the next run finds the value on the item again and finishes the job.
//
// A move is not idempotent in that way: recomputed after a crash, its
// target could name another image's file (see doneTarget). So done is
// committed with the target first, and the move, with its own commit, is
// the next step (stepAfter), which a restart resumes into the same folder.
func (p *Pipeline) markDone(ctx context.Context, img *state.Image, w Watch, imageURL string) error {
	p.imports.forget(img.ID)
	// A target committed earlier (with the PATCH intent) may be moved to
	// now; one chosen only now is committed first and moved by stepAfter.
	movedTo, committed := img.MovedTo, img.MovedTo != ""
	if movedTo == "" && img.DoneTarget != "" {
		movedTo, committed = img.DoneTarget, true
	}
	if movedTo == "" {
		movedTo = doneTarget(img, w)
	}
	var actErr error
	if committed {
		w.AfterUpload = watch.AfterUploadMove // a committed move is finished, whatever the config says now (as stepAfter)
	}
	if movedTo == "" || committed {
		if actErr = afterAction(ctx, img, w, movedTo); actErr == nil {
			removeSpools(img)
		}
	}
	values := state.CloneValues(img.Values) // confirmations known only in memory so far
	finished := actErr == nil && (movedTo == "" || committed)
	now := p.cfg.Now().UTC()
	record := func(r *state.Image) {
		if values != nil {
			r.Values = values
		}
		r.State, r.ImageURL, r.ImagePK = state.Done, imageURL, lastSegment(imageURL)
		r.LastError, r.Attempts = "", 0
		r.WaitingFor, r.Until = "", time.Time{}
		r.MovedTo = movedTo
		if finished {
			r.State, r.ActionDone, r.Finished = state.Finished, true, now
		}
	}
	imported := func() {
		p.held.add(img)
		p.supersedeOlder(img)
		// One line per imported image says where its files went (or go).
		p.log.Info("image imported", "id", img.ID, "key", img.Key, "item", img.ItemPK, "image", img.ImagePK, "files", filesWent(w, movedTo, committed, actErr))
		if p.cfg.Progress != nil {
			p.cfg.Progress(ProgressEvent{ID: img.ID, Key: img.Key, Imported: true})
		}
	}
	if finished {
		// Nothing is left to do for the image: its worker goes on to the
		// next while the commit is made (finishLater).
		p.finishLater(img, record, imported)
		return nil
	}
	if err := p.save(img, record); err != nil {
		return err
	}
	imported()
	return actErr
}

// filesWent says where an imported image's files are now, for its log line.
func filesWent(w Watch, movedTo string, moved bool, actErr error) string {
	switch {
	case actErr != nil:
		return "still in " + w.Path + " (the after-upload action failed and is retried)"
	case moved:
		return "moved to " + movedTo
	case movedTo != "":
		return "being moved to " + movedTo
	case w.AfterUpload == watch.AfterUploadDelete:
		return "deleted"
	}
	return "kept in " + w.Path
}
