package ingest

import (
	"cmp"
	"context"
	"fmt"
	"strings"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/state"
)

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

// stepFolderItem finds the folder's item (named by item.txt, or by title,
// created when absent), refuses to replace a value without replace = true,
// records the intent and sends every value in one PATCH.
func (p *Pipeline) stepFolderItem(ctx context.Context, img *state.Image, w Watch, ar *gcapi.Archive) error {
	var it *gcapi.ArchiveItem
	var err error
	switch {
	case img.ItemPK != "":
		it, err = p.api.ArchiveItem(ctx, img.ItemPK)
		if gcapi.IsNotFound(err) && img.TargetItem {
			return inputErrorf("%s names archive item %s, which does not exist or this token may not see", ItemFile, img.ItemPK)
		}
		if err != nil {
			return fmt.Errorf("get archive item %s: %w", img.ItemPK, err)
		}
		if img.TargetItem && it.Archive != "" && it.Archive != ar.APIURL {
			return inputErrorf("%s names archive item %s, which is not in archive %s", ItemFile, img.ItemPK, w.Archive)
		}
	case img.ItemIntentAt.Before(p.started) || img.Attempts > 0:
		if it, err = p.api.ArchiveItemByTitle(ctx, ar.PK, img.Title); err != nil {
			return fmt.Errorf("find archive item %q: %w", img.Title, err)
		}
	}
	if it == nil {
		it, err = p.api.CreateArchiveItem(ctx, ar.APIURL, img.Title)
		if gcapi.IsTitleConflict(err) {
			it, err = p.api.ArchiveItemByTitle(ctx, ar.PK, img.Title)
			if err == nil && it == nil {
				err = fmt.Errorf("the title is taken but no item with it is visible")
			}
		}
		if err != nil {
			return fmt.Errorf("create archive item %q: %w", img.Title, err)
		}
	}
	uploads := cloneUploads(img.Uploads) // completions known only in memory so far
	values := state.CloneValues(img.Values)
	hashed := strings.Contains(cmp.Or(w.Title, DefaultTitle), "{hash}")
	open := 0
	for i := range values {
		v := &values[i]
		v.Prev, v.Confirmed = valueNow(it, v), false
		switch {
		case v.Prev == "":
		case w.Replace:
			// Replaced on purpose; Prev tells our value from the old one.
		case img.TargetItem:
			return inputErrorf("item %s already has a value for %s; set replace = true on the watch to replace it", it.PK, v.Interface)
		case hashed:
			// Same title, same content (the hash covers every file): an
			// earlier attempt landed this value. Not sent again.
			v.Confirmed = true
		default:
			return inputErrorf("archive item %s titled %q already has a value for %s; not replacing it "+
				"(set replace = true on the watch, or put {hash} in the title template to keep changed content apart)", it.PK, img.Title, v.Interface)
		}
		if !v.Confirmed {
			open++
		}
	}
	if open == 0 {
		p.log.Info("identical folder already in the archive; not sending it again", "id", img.ID, "item", it.PK, "title", img.Title)
		return p.save(img, func(r *state.Image) {
			r.Uploads, r.Values = uploads, values
			r.ItemPK, r.ImageURL = it.PK, imageURL(it, w.Interface)
			r.ImagePK = lastSegment(r.ImageURL)
			r.State = state.Duplicate
			r.LastError = fmt.Sprintf("item %s with title %q already holds every value of this folder", it.PK, img.Title)
		})
	}
	intent := img.ItemIntentAt
	if err := p.save(img, func(r *state.Image) {
		r.Uploads, r.Values, r.ItemIntentAt = uploads, values, intent
		r.ItemPK = it.PK
		r.PatchSentAt = p.cfg.Now().UTC()
		r.State = state.Attaching
	}); err != nil {
		return err
	}
	return p.sendFolderPatch(ctx, img, w)
}

// sendFolderPatch sends every value not yet on the item in one PATCH (the
// server validates them all before applying any), then looks once.
func (p *Pipeline) sendFolderPatch(ctx context.Context, img *state.Image, w Watch) error {
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
		case state.ValueFile:
			u.UserUpload = img.Uploads[v.Uploads[0]].APIURL
		case state.ValueJSON:
			u.Value = v.JSON
		default:
			return inputErrorf("%s: value for %s of unknown kind %q", img.Key, v.Interface, v.Kind)
		}
		updates = append(updates, u)
	}
	if _, err := p.api.UpdateArchiveItem(ctx, img.ItemPK, updates); err != nil {
		return fmt.Errorf("attach %d values to archive item %s: %w", len(updates), img.ItemPK, err)
	}
	p.mu.Lock()
	p.polls[img.ID] = 0
	p.mu.Unlock()
	it, err := p.api.ArchiveItem(ctx, img.ItemPK)
	if err == nil {
		done, err := p.confirmValues(ctx, img, w, it)
		if err != nil || done {
			return err
		}
	}
	return p.save(img, func(r *state.Image) { r.State = state.Importing })
}

// confirmValues marks the values the item now shows (an image value: a new
// image; a file value: a new file and its upload gone; a JSON value: equal)
// and, when every value is there, finishes the item. It reports whether it
// did.
func (p *Pipeline) confirmValues(ctx context.Context, img *state.Image, w Watch, it *gcapi.ArchiveItem) (bool, error) {
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
			_, err := p.api.Upload(ctx, img.Uploads[v.Uploads[0]].PK)
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
		return true, p.markDone(img, w, imageURL(it, w.Interface))
	}
	if changed {
		return false, p.save(img, func(r *state.Image) { r.Values = values })
	}
	return false, nil
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

// stepFolderReattach reconciles a folder item whose PATCH may or may not
// have reached the server, and sends it again only if it did not: no value
// changed, no import started from our uploads, every upload unconsumed.
func (p *Pipeline) stepFolderReattach(ctx context.Context, img *state.Image, w Watch) error {
	it, err := p.api.ArchiveItem(ctx, img.ItemPK)
	if err != nil {
		return fmt.Errorf("get archive item %s: %w", img.ItemPK, err)
	}
	if done, err := p.confirmValues(ctx, img, w, it); err != nil || done {
		return err
	}
	if arrived(img, it) {
		return p.save(img, func(r *state.Image) { r.State = state.Importing })
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
	if shown, err := p.patchArrived(ctx, img, pending, "an image of the folder"); err != nil || shown {
		return err
	}
	// Nothing shows the PATCH: send it (JSON values alone are harmless to
	// send twice: an equal value is a no-op).
	return p.sendFolderPatch(ctx, img, w)
}

// stepFolderPoll looks once at an importing folder item.
func (p *Pipeline) stepFolderPoll(ctx context.Context, img *state.Image, w Watch) error {
	it, err := p.api.ArchiveItem(ctx, img.ItemPK)
	if err != nil {
		return fmt.Errorf("get archive item %s: %w", img.ItemPK, err)
	}
	if done, err := p.confirmValues(ctx, img, w, it); err != nil || done {
		return err
	}
	return p.pollMore(ctx, img)
}
