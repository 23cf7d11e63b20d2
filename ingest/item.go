package ingest

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/ingest/group"
	"github.com/gcingest/gcingest/state"
)

func imageURL(it *gcapi.ArchiveItem, iface string) string {
	if v := it.Value(iface); v != nil && v.Image != nil {
		return *v.Image
	}
	return ""
}

// valueNow is what the item shows for v's interface, in the form
// state.Value.Prev keeps: an image URL, a file URL, or "json:" and the
// value; "" when the item has no value there.
func valueNow(it *gcapi.ArchiveItem, v *state.Value) string {
	cur := it.Value(v.Interface)
	if cur == nil {
		return ""
	}
	switch {
	case cur.Image != nil && *cur.Image != "":
		return *cur.Image
	case cur.File != nil && *cur.File != "":
		return *cur.File
	case len(cur.Value) > 0 && string(cur.Value) != "null":
		return "json:" + string(cur.Value)
	}
	return ""
}

// stepItem finds the item (named by a folder's item.txt, or by its title,
// created when absent), notes what it holds for each of our interfaces,
// refuses to replace a value unless the watch allows it, records the
// intent ("attaching", with the item pk) and sends every value in one PATCH
// (attach.go). An item that holds every value already, under a title with
// the content's hash, is a duplicate: nothing is sent.
func (s *steps) stepItem(ctx context.Context, img *state.Image) error {
	w, err := s.watchOf(img)
	if err != nil {
		return err
	}
	ar, err := s.server.archive(ctx, archiveSlug(img, w))
	if err != nil {
		return err
	}
	it, err := s.findOrCreateItem(ctx, img, w, ar)
	if err != nil {
		return err
	}
	uploads := cloneUploads(img.Uploads) // completions known only in memory so far
	values := state.CloneValues(img.Values)
	hashed := strings.Contains(cmp.Or(w.Title, DefaultTitle), "{hash}")
	open := 0
	for i := range values {
		v := &values[i]
		if v.Confirmed {
			// Landed in an earlier attempt (its other values' uploads
			// were sent again): ours, not a value to refuse.
			continue
		}
		v.Prev = valueNow(it, v)
		switch {
		case v.Prev == "":
		case w.Replace, group.IsDICOMKey(img.Key) && !img.TargetItem:
			// Replaced on purpose; Prev tells our value from the old one.
			// A DICOM series' item is keyed by the series (deid.go): a late
			// file makes it hold the complete series, never a second item.
		case img.TargetItem:
			return inputErrorf("item %s already has a value for %s; set replace = true on the watch to replace it", it.PK, v.Interface)
		case hashed:
			// Same title, same content (the hash covers every file): an
			// earlier attempt (or an earlier agent) landed this value. Not
			// sent again: no second item, no replaced value.
			v.Confirmed = true
		default:
			// Without {hash} in the title, the same title says nothing
			// about the content: never replace what the item holds.
			return inputErrorf("archive item %s titled %q already has a value for %s; not replacing it "+
				"(put {hash} in the watch's title template to keep changed content apart, or set replace = true on a folder watch)",
				it.PK, img.Title, v.Interface)
		}
		if !v.Confirmed {
			open++
		}
	}
	if open == 0 {
		return s.markDuplicate(ctx, img, w, it, uploads, values)
	}
	intent := img.ItemIntentAt
	joined := false
	if err := s.save(img, func(r *state.Image) {
		if joined = len(r.Joined) > 0; joined {
			return // a file joined the group (folder.go, joinFiles): plan again first
		}
		r.Uploads, r.Values, r.ItemIntentAt = uploads, values, intent
		r.ItemPK = it.PK
		r.PatchSentAt = s.cfg.Now().UTC()
		r.State = state.Attaching
		if r.DoneTarget == "" {
			// Where the files go once the import is confirmed, committed
			// here with the PATCH intent, so that markDone can move them
			// and record the image finished in one commit (the target is
			// durable before the rename, docs/PATTERNS.md).
			r.DoneTarget = doneTarget(r, w)
		}
	}); err != nil {
		return err
	}
	if joined {
		return s.up.backToPending(ctx, img, "a file that joined "+img.Key)
	}
	return s.sendPatch(ctx, img, w)
}

// markDuplicate records that the item it already holds every value of img.
func (s *steps) markDuplicate(ctx context.Context, img *state.Image, w Watch, it *gcapi.ArchiveItem, uploads []state.Upload, values []state.Value) error {
	s.log.Info("identical item already in the archive; not sending it again", "id", img.ID, "item", it.PK, "title", img.Title)
	joined := false
	err := s.save(img, func(r *state.Image) {
		if joined = len(r.Joined) > 0; joined {
			return // a file joined the group: plan again first
		}
		r.Uploads, r.Values = uploads, values
		r.ItemPK, r.ImageURL = it.PK, imageURL(it, mainInterface(img, w))
		r.ImagePK = lastSegment(r.ImageURL)
		r.State = state.Duplicate
		r.WaitingFor, r.Until = "", time.Time{}
		r.LastError = fmt.Sprintf("item %s with title %q already holds %s", it.PK, img.Title, describeValues(values))
	})
	if err == nil && joined {
		return s.up.backToPending(ctx, img, "a file that joined "+img.Key)
	}
	if err == nil {
		s.supersedeOlder(img) // its content is in the archive: earlier failures of it are past
	}
	return err
}

// alreadyInArchive recognises, before anything is uploaded, an image whose
// item (same title, and the title carries the content's hash) already
// holds every value: after the state file was lost, say. It is marked a
// duplicate and reports true. The lookup is in the archive's title index,
// listed once per run, so new images cost no request.
func (s *steps) alreadyInArchive(ctx context.Context, img *state.Image) (bool, error) {
	if img.TargetItem || img.ItemPK != "" {
		return false, nil
	}
	for _, u := range img.Uploads {
		if u.PK != "" || u.Completed {
			return false, nil // under way: its item step reconciles
		}
	}
	return s.contentInArchive(ctx, img)
}

// contentInArchive is alreadyInArchive's look, for an image whose files
// are hashed: sent before by this agent under another grouping, or an
// item titled with the content's hash that holds every value. Either marks
// the image a duplicate and reports true.
func (s *steps) contentInArchive(ctx context.Context, img *state.Image) (bool, error) {
	w, err := s.watchOf(img)
	if err != nil {
		return false, err
	}
	if pk, err := s.held.itemOf(img); err != nil || pk != "" {
		if err != nil {
			return false, err
		}
		// Every file is in an item we landed, under another grouping
		// (the watch's group changed, files kept): not sent again.
		s.log.Info("files already in the archive; not sending them again", "id", img.ID, "item", pk)
		return true, s.save(img, func(r *state.Image) {
			r.ItemPK, r.State = pk, state.Duplicate
			r.WaitingFor, r.Until = "", time.Time{}
			r.LastError = fmt.Sprintf("archive item %s already holds these files (sent as part of another image); not sent again", pk)
		})
	}
	if group.IsDICOMKey(img.Key) {
		// A series' title is keyed by the series, not its content, so that
		// late slices join its item: the server's image tells whether the
		// item holds this series whole.
		return s.seriesHeld(ctx, img, w)
	}
	if w.Replace || img.Title == "" || !strings.Contains(cmp.Or(w.Title, DefaultTitle), "{hash}") {
		// The title says nothing about the content: a DICOM series' title
		// is keyed by the series, so that late slices join its item.
		return false, nil
	}
	it, err := s.itemTitled(ctx, img, w)
	if err != nil || it == nil {
		return false, err
	}
	values := state.CloneValues(img.Values)
	for i := range values {
		v := &values[i]
		if v.Prev = valueNow(it, v); v.Prev == "" {
			return false, nil // not all there: sent, and joined to this item
		}
		v.Confirmed = true
	}
	return true, s.markDuplicate(ctx, img, w, it, cloneUploads(img.Uploads), values)
}

// describeValues names the values for a message: "an image for ct-image"
// for one, "every value of this folder" for several.
func describeValues(values []state.Value) string {
	if len(values) == 1 {
		if values[0].Kind == state.ValueImage {
			return "an image for " + values[0].Interface
		}
		return "a value for " + values[0].Interface
	}
	return "every value of this folder"
}

// findOrCreateItem returns the item named by img.ItemPK (a folder's
// item.txt, or an earlier attempt), or the one with img's title, created
// when absent. The title is the idempotency key: after a crash (an item
// intent from before this run, or an earlier failed attempt) it is looked
// up before anything is created, and a create refused because the title is
// taken finds the item that holds it.
func (s *steps) findOrCreateItem(ctx context.Context, img *state.Image, w Watch, ar *gcapi.Archive) (*gcapi.ArchiveItem, error) {
	var it *gcapi.ArchiveItem
	var err error
	title := normalizeTitle(img.Title)
	switch {
	case img.ItemPK != "":
		it, err = s.api.ArchiveItem(ctx, img.ItemPK)
		if gcapi.IsNotFound(err) && img.TargetItem {
			return nil, inputErrorf("%s names archive item %s, which does not exist or this token may not see", group.ItemFile, img.ItemPK)
		}
		if err != nil {
			return nil, fmt.Errorf("get archive item %s: %w", img.ItemPK, err)
		}
		if img.TargetItem && it.Archive != "" && it.Archive != ar.APIURL {
			return nil, inputErrorf("%s names archive item %s, which is not in archive %s", group.ItemFile, img.ItemPK, archiveSlug(img, w))
		}
		return it, nil
	case img.ItemIntentAt.Before(s.started) || img.Created.Before(s.started) || img.Attempts > 0:
		// A create may have happened without us hearing of it. In an
		// earlier run (the process died): any listing of this run shows
		// it, so one listing serves every image recovered. In this run
		// (an earlier attempt failed): a listing begun after the image's
		// last commit, which followed that attempt.
		after := s.started
		if img.Attempts > 0 {
			after = maxTime(after, img.Updated)
		}
		if it, err = s.server.itemByTitle(ctx, ar, title, after); err != nil {
			return nil, err
		}
		if it != nil {
			return it, nil
		}
	}
	it, err = s.api.CreateArchiveItem(ctx, ar.APIURL, title)
	if gcapi.IsTitleConflict(err) {
		it, err = s.server.itemByTitle(ctx, ar, title, s.cfg.Now())
		if err == nil && it == nil {
			err = fmt.Errorf("the title is taken but no item with it is visible")
		}
	}
	if noUploadRights(err) {
		// Whole, for people: status shows the cause of an error as the
		// text after its last HTTP status or colon, which the server's
		// words would cut in two.
		return nil, inputErrorf("this account can see archive %q but may not add items to it (the server refused the item with "+
			"\"Invalid hyperlink - Object does not exist\"); ask an editor of the archive to add the account as an uploader, then run gcingest retry %d",
			ar.Slug, img.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("create archive item %q: %w", title, err)
	}
	s.server.created(ar, it)
	return it, nil
}

// archiveSlug is the archive img goes to: the one recorded with it, or,
// for records from before archives were recorded, the watch's.
func archiveSlug(img *state.Image, w Watch) string {
	return cmp.Or(img.Archive, w.Archive)
}

func lastSegment(u string) string {
	return path.Base(strings.TrimSuffix(u, "/"))
}

// noUploadRights recognises the server's answer to an item create in an
// archive the account may view but not upload to: a 400 on the archive
// field, "Invalid hyperlink - Object does not exist." (grand-challenge.org
// ArchiveItemPostSerializer limits the archive field to archives with
// upload_archive for the user).
func noUploadRights(err error) bool {
	var e *gcapi.Error
	return errors.As(err, &e) && e.StatusCode == http.StatusBadRequest &&
		bytes.Contains(e.Body, []byte(`"archive"`)) && bytes.Contains(e.Body, []byte("Object does not exist"))
}

// itemTitled returns the item of img's archive that has img's title, as
// the archive's title index knows it, or nil.
func (s *steps) itemTitled(ctx context.Context, img *state.Image, w Watch) (*gcapi.ArchiveItem, error) {
	ar, err := s.server.archive(ctx, archiveSlug(img, w))
	if err != nil {
		return nil, err
	}
	return s.server.itemByTitle(ctx, ar, normalizeTitle(img.Title), s.started)
}
