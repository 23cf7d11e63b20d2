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

// sessionCycles is how many poll cycles after its PATCH an image's item
// is looked at before its upload sessions are read, and sessionEvery how
// many between reads after that. An import that is done within them (the
// usual case) costs no session request at all; one that is not is slow
// or failed, and the sessions tell which (a failure, with the server's
// message) while they still name our uploads.
const (
	sessionCycles = 30
	sessionEvery  = 10
)

// confirmer takes an image from importing to done: it reads the items of
// the images a lane cycle takes (readItems), confirms the values each
// shows (stepPoll), follows a slow import through its upload sessions,
// goes back to the server's truth at the deadline, and records the image
// imported (markDone). It owns what it follows per image: the polls and
// the items a cycle read.
type confirmer struct {
	*records
	cfg    PipelineConfig
	api    API
	server *serverCache
	held   *heldFiles   // the files of images that landed, by item
	polls  *importPolls // the images importing: their polls and looks
	reads  itemReads    // items the confirmation lane read, by image (lane.go)
	finish finisher
}

// finisher makes an image's last commit off its worker; the Pipeline
// does, and keeps the image from any worker until the commit is made.
type finisher interface {
	finishLater(id uint64, commit func() error, then func())
}

// importPolls follows the images importing: when each image's sessions
// are read next, and since when its uploads have been seen gone with no
// session of ours and no value (orphaned). No other state changes with
// it, so it has its own lock.
type importPolls struct {
	mu       sync.Mutex
	sessions map[uint64]time.Time // when the sessions are read next, by image id
	orphan   map[uint64]time.Time // since when the image's uploads are seen orphaned
}

func newImportPolls() *importPolls {
	return &importPolls{sessions: map[uint64]time.Time{}, orphan: map[uint64]time.Time{}}
}

// sessionsDue reports whether id's sessions are to be read now (first:
// when first due; every: the wait after a read), and if so counts the
// read.
func (ip *importPolls) sessionsDue(id uint64, now, first time.Time, every time.Duration) bool {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	at, ok := ip.sessions[id]
	if !ok {
		at = first
	}
	if now.Before(at) {
		return false
	}
	ip.sessions[id] = now.Add(every)
	return true
}

// orphaned notes that id's uploads are orphaned now, and returns since
// when they have been; notOrphaned forgets it.
func (ip *importPolls) orphaned(id uint64, now time.Time) time.Time {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	since, ok := ip.orphan[id]
	if !ok {
		ip.orphan[id], since = now, now
	}
	return since
}

func (ip *importPolls) notOrphaned(id uint64) {
	ip.mu.Lock()
	delete(ip.orphan, id)
	ip.mu.Unlock()
}

// forget drops id: imported, failed, or sent again.
func (ip *importPolls) forget(id uint64) {
	ip.mu.Lock()
	delete(ip.sessions, id)
	delete(ip.orphan, id)
	ip.mu.Unlock()
}

// stepPoll looks once at an importing item: done when it shows every
// value. An import not done after sessionCycles is followed through its
// upload sessions (a failure, with the server's message; uploads gone
// with no session to deliver them, sent again: orphans); past the
// image's deadline (Until) the agent goes back to the server's truth
// (deadline).
func (cf *confirmer) stepPoll(ctx context.Context, img *state.Image) error {
	_, done, err := cf.look(ctx, img)
	if err != nil || done {
		return err
	}
	now := cf.cfg.Now()
	first := img.PatchSentAt.Add(sessionCycles * cf.cfg.PollInterval)
	if cf.polls.sessionsDue(img.ID, now, first, sessionEvery*cf.cfg.PollInterval) {
		if _, err := cf.readSessions(ctx, img, true); err != nil {
			return err
		}
		if err := cf.orphans(ctx, img); err != nil {
			return err
		}
		if img.State != state.Importing {
			return nil // sent again
		}
	}
	if img.Until.IsZero() {
		// A record from before deadlines were kept.
		until := img.PatchSentAt.Add(cf.cfg.ImportTimeout)
		if err := cf.save(img, func(r *state.Image) { r.Until, r.WaitingFor = until, waitingForImport(r) }); err != nil {
			return err
		}
	}
	if now.After(img.Until) {
		return cf.deadline(ctx, img)
	}
	// A short, fixed cycle: the lane looks at every image due in one
	// cycle with one read of each archive (lane.go).
	return &waitError{at: now.Add(cf.cfg.PollInterval)}
}

// orphans sends again, to the same item, the image values whose uploads
// are gone while no session of ours builds them and the item does not
// show them, once that has held for orphanWait: uploads that expired
// while the agent was stopped, or whose import the server lost. That is
// enough evidence within a few reads of the sessions; waiting for the
// deadline (hours) would not add any. A value sent again to its own item
// replaces nothing of anyone else's.
func (cf *confirmer) orphans(ctx context.Context, img *state.Image) error {
	var lost []int
	for i, v := range img.Values {
		if v.Confirmed || v.SessionPK != "" || v.Kind != state.ValueImage || len(v.Uploads) == 0 {
			continue
		}
		gone := true
		for _, u := range v.Uploads {
			_, err := cf.api.Upload(ctx, img.Uploads[u].PK)
			if gcapi.IsNotFound(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("check upload %s of %s: %w", img.Uploads[u].PK, v.Interface, err)
			}
			gone = false
			break
		}
		if gone {
			lost = append(lost, i)
		}
	}
	if len(lost) == 0 || img.Resent >= maxResend {
		cf.polls.notOrphaned(img.ID)
		return nil
	}
	since := cf.polls.orphaned(img.ID, cf.cfg.Now())
	if cf.cfg.Now().Sub(since) < cf.orphanWait() {
		return nil
	}
	return cf.resend(img, lost, "its uploads are gone from the server, no import of ours is building them and the item does not show them")
}

// orphanWait is how long uploads must stay orphaned before they are sent
// again: a build that succeeded (its uploads deleted, its session no
// longer naming them) links its image to the item within it.
func (cf *confirmer) orphanWait() time.Duration { return 2 * cf.cfg.PollMax }

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
func (cf *confirmer) look(ctx context.Context, img *state.Image) (it *gcapi.ArchiveItem, done bool, err error) {
	w, err := cf.watchOf(img)
	if err != nil {
		return nil, false, err
	}
	if it, err = cf.itemNow(ctx, img); err != nil {
		return nil, false, err
	}
	done, err = cf.confirmValues(ctx, img, w, it)
	return it, done, err
}

// itemNow returns the image's item as the confirmation lane's cycle read
// it (lane.go), or else by its pk.
func (cf *confirmer) itemNow(ctx context.Context, img *state.Image) (*gcapi.ArchiveItem, error) {
	if r, ok := cf.reads.take(img.ID); ok {
		return r.it, r.err
	}
	it, err := cf.api.ArchiveItem(ctx, img.ItemPK)
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
func (cf *confirmer) readSessions(ctx context.Context, img *state.Image, capture bool) (building []string, err error) {
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
		sessions, err := cf.server.sessionList(ctx, img.Updated)
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
		se, err := cf.api.UploadSession(ctx, v.SessionPK)
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
		if err := cf.save(img, func(r *state.Image) { r.Values = values }); err != nil {
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
func (cf *confirmer) deadline(ctx context.Context, img *state.Image) error {
	building, err := cf.readSessions(ctx, img, true)
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
			_, err := cf.api.Upload(ctx, img.Uploads[u].PK)
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
	due := img.PatchSentAt.Add(cf.cfg.ImportTimeout)
	switch {
	case cf.cfg.Now().Before(due) && (len(unattached) > 0 || len(lost) > 0):
		// Looked at early (gcingest retry): an import may still take
		// these; wait for the real deadline before judging.
		return cf.save(img, func(r *state.Image) { r.Until = due })
	case len(unattached) > 0:
		return &importError{msg: fmt.Sprintf("%s not attached to archive item %s %s after the uploads were sent; "+
			"the server refused it without an error we can read: see your notifications on Grand Challenge",
			strings.Join(unattached, ", "), img.ItemPK, cf.cfg.ImportTimeout)}
	case len(lost) > 0 && img.Resent >= maxResend:
		var names []string
		for _, i := range lost {
			names = append(names, img.Values[i].Interface)
		}
		return &importError{msg: fmt.Sprintf("%s not attached to archive item %s: its uploads are gone and sending them "+
			"again %d times did not help; see your notifications on Grand Challenge", strings.Join(names, ", "), img.ItemPK, img.Resent)}
	case len(lost) > 0:
		return cf.resend(img, lost, "its uploads are gone from the server before an import took them (expired)")
	}
	if limit := maxImportWaits * cf.cfg.ImportTimeout; cf.cfg.Now().Sub(img.PatchSentAt) > limit {
		return &importError{msg: fmt.Sprintf("the server's import of %s has not finished %s after the uploads were attached "+
			"(archive item %s); ask the Grand Challenge admins about it, then gcingest retry", strings.Join(building, ", "), limit, img.ItemPK)}
	}
	until := cf.cfg.Now().Add(cf.cfg.ImportTimeout)
	cf.log.Warn("import still running on the server; waiting longer", "id", img.ID, "item", img.ItemPK, "values", building)
	if err := cf.save(img, func(r *state.Image) {
		r.Until = until
		r.WaitingFor = "the server's import of " + strings.Join(building, ", ") + " (still running)"
		r.LastError = fmt.Sprintf("the import has not finished %s after the uploads were attached; still waiting", cf.cfg.ImportTimeout)
	}); err != nil {
		return err
	}
	return &waitError{at: cf.cfg.Now().Add(cf.cfg.PollMax)}
}

// resend sends the uploads of the given values again, to the same item:
// the server lost them (expired after 24 h) before an import took them.
// The item pk is kept; values already on the item stay confirmed.
func (cf *confirmer) resend(img *state.Image, lost []int, why string) error {
	cf.log.Warn("sending uploads again", "id", img.ID, "item", img.ItemPK, "why", why)
	cf.polls.forget(img.ID)
	return cf.save(img, func(r *state.Image) {
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
func (cf *confirmer) markDone(ctx context.Context, img *state.Image, w Watch, imageURL string) error {
	cf.polls.forget(img.ID)
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
	now := cf.cfg.Now().UTC()
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
		cf.held.add(img)
		cf.supersedeOlder(img)
		// One line per imported image says where its files went (or go).
		cf.log.Info("image imported", "id", img.ID, "key", img.Key, "item", img.ItemPK, "image", img.ImagePK, "files", filesWent(w, movedTo, committed, actErr))
		if cf.cfg.Progress != nil {
			cf.cfg.Progress(ProgressEvent{ID: img.ID, Key: img.Key, Imported: true})
		}
	}
	if finished {
		// Nothing is left to do for the image: its worker goes on to the
		// next while the commit is made (finishLater), with any change
		// saveLater held for it. A crash before it finds the image at its
		// last commit, whose step finds the files moved and finishes
		// again (docs/PATTERNS.md, rule 5).
		later := cf.later.take(img.ID)
		record(img)
		id := img.ID
		cf.finish.finishLater(id, func() error {
			_, err := cf.commit(id, later, record)
			return err
		}, imported)
		return nil
	}
	if err := cf.save(img, record); err != nil {
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
