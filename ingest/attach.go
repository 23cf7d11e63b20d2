package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/state"
)

// sendPatch sends every value not yet on the item in one PATCH (the
// server validates them all before applying any) and records the image
// importing. Until then the record says "attaching", which a restart
// reconciles without sending the PATCH again (stepReattach).
func (s *steps) sendPatch(ctx context.Context, img *state.Image, w Watch) error {
	if w.Unlocked {
		if sent, err := s.recheck(ctx, img, w); err != nil || sent {
			return err
		}
	}
	var updates []gcapi.ValueUpdate
	for _, v := range img.Values {
		if v.Confirmed {
			continue
		}
		u := gcapi.ValueUpdate{Interface: v.Interface}
		switch v.Kind {
		case state.ValueImage:
			for _, i := range v.Uploads {
				u.UserUploads = append(u.UserUploads, img.Uploads[i].APIURL)
			}
			u.ImageName = v.ImageName // DICOM Image Set sockets (deid.go)
		case state.ValueFile:
			u.UserUpload = img.Uploads[v.Uploads[0]].APIURL
		case state.ValueJSON:
			u.Value = v.JSON
		default:
			return inputErrorf("%s: value for %s of unknown kind %q", img.Key, v.Interface, v.Kind)
		}
		updates = append(updates, u)
	}
	if _, err := s.api.UpdateArchiveItem(ctx, img.ItemPK, updates); err != nil {
		err = fmt.Errorf("attach %d values to archive item %s: %w", len(updates), img.ItemPK, err)
		var ge *gcapi.Error
		if errors.As(err, &ge) && ge.StatusCode == http.StatusBadRequest {
			// "Invalid hyperlink - Object does not exist." for an upload
			// the server deleted (expired after a day, say): the PATCH
			// applied nothing; send those uploads again, to this item.
			lost, lerr := s.lostUploads(ctx, img)
			if lerr != nil {
				return lerr
			}
			if len(lost) > 0 && img.Resent < maxResend {
				return s.confirm.resend(img, lost, "the server no longer has the uploads (expired before they were attached)")
			}
		}
		return err
	}
	// No look now: no import is done this soon; the confirmation lane
	// looks a cycle from now (lane.go).
	return s.save(img, func(r *state.Image) { s.confirm.toImporting(r) })
}

// toImporting moves r to importing, with its deadline.
func (cf *confirmer) toImporting(r *state.Image) {
	r.State = state.Importing
	if r.PatchSentAt.IsZero() {
		r.PatchSentAt = cf.cfg.Now().UTC()
	}
	r.Until, r.WaitingFor = r.PatchSentAt.Add(cf.cfg.ImportTimeout), waitingForImport(r)
	r.BlockedSince = time.Time{}
}

// lostUploads returns the open values whose uploads the server no longer
// has.
func (s *steps) lostUploads(ctx context.Context, img *state.Image) ([]int, error) {
	var lost []int
	for i, v := range img.Values {
		if v.Confirmed {
			continue
		}
		for _, u := range v.Uploads {
			_, err := s.api.Upload(ctx, img.Uploads[u].PK)
			if gcapi.IsNotFound(err) {
				lost = append(lost, i)
				break
			}
			if err != nil {
				return nil, fmt.Errorf("check upload %s of %s: %w", img.Uploads[u].PK, v.Interface, err)
			}
		}
	}
	return lost, nil
}

// stepReattach reconciles an item whose PATCH may or may not have reached
// the server, and sends it again only if it did not: no value changed, no
// import started from our uploads, every upload unconsumed.
func (s *steps) stepReattach(ctx context.Context, img *state.Image) error {
	it, done, err := s.confirm.look(ctx, img)
	if err != nil || done {
		return err
	}
	if arrived(img, it) {
		return s.save(img, func(r *state.Image) { s.confirm.toImporting(r) })
	}
	var pending []state.Upload
	for _, v := range img.Values {
		if v.Confirmed {
			continue
		}
		for _, i := range v.Uploads {
			pending = append(pending, img.Uploads[i])
		}
	}
	what := "an image of the folder"
	if len(img.Values) == 1 {
		what = "the image"
	}
	if shown, err := s.patchArrived(ctx, img, pending, what); err != nil || shown {
		return err
	}
	// Nothing shows the PATCH: send it (JSON values alone are harmless to
	// send twice: an equal value is a no-op).
	w, err := s.watchOf(img)
	if err != nil {
		return err
	}
	return s.sendPatch(ctx, img, w)
}

// arrived reports whether the item shows anything our PATCH would have
// changed (it must then have arrived: the server applies a PATCH whole or
// not at all).
func arrived(img *state.Image, it *gcapi.ArchiveItem) bool {
	for i := range img.Values {
		v := &img.Values[i]
		if v.Confirmed {
			continue
		}
		if cur := valueNow(it, v); cur != v.Prev {
			return true
		}
	}
	return false
}

// confirmValues marks the values the item now shows (an image value: a new
// image; a file value: a new file and its upload gone; a JSON value: equal)
// and, when every value is there, finishes the item. It reports whether it
// did.
func (cf *confirmer) confirmValues(ctx context.Context, img *state.Image, w Watch, it *gcapi.ArchiveItem) (bool, error) {
	values := state.CloneValues(img.Values)
	changed, all := false, true
	for i := range values {
		v := &values[i]
		if v.Confirmed {
			continue
		}
		cur := valueNow(it, v)
		switch v.Kind {
		case state.ValueJSON:
			if iv := it.Value(v.Interface); iv != nil && jsonEqual(iv.Value, v.JSON) {
				v.Confirmed = true
			}
		case state.ValueImage:
			v.Confirmed = cur != "" && cur != v.Prev
		case state.ValueFile:
			if cur == "" || cur == v.Prev {
				break
			}
			// The file shown may still be another's copy job: ours is done
			// when our upload was consumed.
			_, err := cf.api.Upload(ctx, img.Uploads[v.Uploads[0]].PK)
			switch {
			case gcapi.IsNotFound(err):
				v.Confirmed = true
			case err != nil:
				return false, fmt.Errorf("check upload %s of %s: %w", img.Uploads[v.Uploads[0]].PK, v.Interface, err)
			}
		}
		changed = changed || v.Confirmed
		all = all && v.Confirmed
	}
	if all {
		img.Values = values
		return true, cf.markDone(ctx, img, w, imageURL(it, mainInterface(img, w)))
	}
	if changed {
		return false, cf.save(img, func(r *state.Image) { r.Values = values })
	}
	return false, nil
}

// patchArrived looks for signs that a PATCH sending these uploads reached
// the server although the item does not show it yet: an import session
// built from them (Failed: the import error, naming what), or an upload
// consumed by an import (or expired). Either moves img to importing, to
// wait and see: such a PATCH is never sent twice. false means nothing shows
// it, so it never arrived.
func (s *steps) patchArrived(ctx context.Context, img *state.Image, uploads []state.Upload, what string) (bool, error) {
	se, err := s.findSession(ctx, img)
	if err != nil {
		return false, err
	}
	if se != nil {
		if se.Status == gcapi.SessionFailed {
			return true, &importError{msg: "the server could not import " + what + ": " + se.ErrorMessage}
		}
		return true, s.save(img, func(r *state.Image) { s.confirm.toImporting(r); r.SessionPK = se.PK })
	}
	for _, u := range uploads {
		cur, err := s.api.Upload(ctx, u.PK)
		if gcapi.IsNotFound(err) {
			// Consumed by an import, or expired: importing's deadline
			// tells which (deadline in poll.go) and sends it again if it
			// expired.
			return true, s.save(img, func(r *state.Image) { s.confirm.toImporting(r) })
		}
		if err != nil {
			return false, fmt.Errorf("check upload %s: %w", u.PK, err)
		}
		if cur.Status != gcapi.UploadCompleted {
			return false, fmt.Errorf("upload %s is %s, not Completed", u.PK, cur.Status)
		}
	}
	return false, nil
}

// findSession returns the server-made upload session built from the
// image's uploads, or nil.
func (s *steps) findSession(ctx context.Context, img *state.Image) (*gcapi.UploadSession, error) {
	if img.SessionPK != "" {
		se, err := s.api.UploadSession(ctx, img.SessionPK)
		if err != nil {
			return nil, fmt.Errorf("get upload session %s: %w", img.SessionPK, err)
		}
		return se, nil
	}
	// A listing begun after the image's last commit (which followed any
	// PATCH attempt's answer) and after this run began (so after any
	// crash) shows a session that PATCH made.
	sessions, err := s.server.sessionList(ctx, maxTime(img.Updated, s.started))
	if err != nil {
		return nil, err
	}
	ours := map[string]bool{}
	for _, u := range img.Uploads {
		ours[u.PK] = true
	}
	for i := range sessions {
		for _, pk := range sessions[i].UserUploads {
			if ours[pk] {
				return &sessions[i], nil
			}
		}
	}
	return nil, nil
}

// mainInterface is the interface of the image's main image value, fixed
// when its values were planned (the watch's interface may have changed
// since).
func mainInterface(img *state.Image, w Watch) string {
	for _, v := range img.Values {
		if v.Kind == state.ValueImage && v.Interface != "" {
			return v.Interface
		}
	}
	return w.Interface
}

// recheck reads the item right before a PATCH on a watch whose folder
// holds no lock, where a second agent may have sent the same files: a
// value the item now shows with our content is theirs and ours at once,
// and is not set again. It reports whether nothing is left to send (the
// image is then recorded as a duplicate, as stepItem records an item that
// held every value already).
//
// "Our content" is what stepItem takes it to be: a title with {hash}
// names the content, so any new value under it is the same content; a
// JSON value must be equal. Without {hash}, or with replace, a value
// that appeared is not known to be ours and our PATCH goes out as before.
// An import the other agent started that does not show on the item yet is
// not seen: this narrows the race, the folder lock closes it.
func (s *steps) recheck(ctx context.Context, img *state.Image, w Watch) (bool, error) {
	it, err := s.api.ArchiveItem(ctx, img.ItemPK)
	if err != nil {
		return false, fmt.Errorf("read archive item %s again before attaching values: %w", img.ItemPK, err)
	}
	hashed := strings.Contains(cmp.Or(w.Title, DefaultTitle), "{hash}")
	values := state.CloneValues(img.Values)
	taken, open := 0, 0
	for i := range values {
		v := &values[i]
		if v.Confirmed {
			continue
		}
		cur := valueNow(it, v)
		switch {
		case v.Kind == state.ValueJSON:
			if iv := it.Value(v.Interface); iv != nil && jsonEqual(iv.Value, v.JSON) {
				v.Confirmed = true
			}
		case cur != "" && cur != v.Prev && hashed && !w.Replace:
			v.Confirmed = true
		}
		if v.Confirmed {
			taken++
		} else {
			open++
		}
	}
	if taken == 0 {
		return false, nil
	}
	if open > 0 {
		// Some values are there, some not: the other agent's PATCH (one
		// request, applied whole) is still importing the rest, or the
		// item differs; send ours for what is missing only.
		s.log.Info("another agent attached some values already; sending the rest", "id", img.ID, "item", img.ItemPK)
		return false, s.save(img, func(r *state.Image) { r.Values = values })
	}
	s.log.Info("another agent attached these values while we prepared them; not sending them again", "id", img.ID, "item", img.ItemPK)
	return true, s.markDuplicate(ctx, img, w, it, cloneUploads(img.Uploads), values)
}
