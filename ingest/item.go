package ingest

import (
	"cmp"
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/ingest/group"
	"github.com/gcingest/gcingest/state"
)

// archive returns the watch's archive, asked once per run.
func (p *Pipeline) archive(ctx context.Context, slug string) (*gcapi.Archive, error) {
	p.mu.Lock()
	a := p.archives[slug]
	p.mu.Unlock()
	if a != nil {
		return a, nil
	}
	a, err := p.api.ArchiveBySlug(ctx, slug)
	if err != nil {
		// The configuration's problem, not the image's: keep retrying
		// (visible in status) rather than failing every image.
		return nil, &configError{fmt.Errorf("find archive %s: %w", slug, err)}
	}
	p.mu.Lock()
	p.archives[slug] = a
	p.mu.Unlock()
	return a, nil
}

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
func (p *Pipeline) stepItem(ctx context.Context, img *state.Image) error {
	w, err := p.watchOf(img)
	if err != nil {
		return err
	}
	ar, err := p.archive(ctx, w.Archive)
	if err != nil {
		return err
	}
	it, err := p.findOrCreateItem(ctx, img, w, ar)
	if err != nil {
		return err
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
		p.log.Info("identical item already in the archive; not sending it again", "id", img.ID, "item", it.PK, "title", img.Title)
		joined := false
		err := p.save(img, func(r *state.Image) {
			if joined = len(r.Joined) > 0; joined {
				return // a file joined the group: plan again first
			}
			r.Uploads, r.Values = uploads, values
			r.ItemPK, r.ImageURL = it.PK, imageURL(it, w.Interface)
			r.ImagePK = lastSegment(r.ImageURL)
			r.State = state.Duplicate
			r.LastError = fmt.Sprintf("item %s with title %q already holds %s", it.PK, img.Title, describeValues(values))
		})
		if err == nil && joined {
			return p.backToPending(ctx, img, "a file that joined "+img.Key)
		}
		return err
	}
	intent := img.ItemIntentAt
	joined := false
	if err := p.save(img, func(r *state.Image) {
		if joined = len(r.Joined) > 0; joined {
			return // a file joined the group (folder.go, joinFiles): plan again first
		}
		r.Uploads, r.Values, r.ItemIntentAt = uploads, values, intent
		r.ItemPK = it.PK
		r.PatchSentAt = p.cfg.Now().UTC()
		r.State = state.Attaching
	}); err != nil {
		return err
	}
	if joined {
		return p.backToPending(ctx, img, "a file that joined "+img.Key)
	}
	return p.sendPatch(ctx, img, w)
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
func (p *Pipeline) findOrCreateItem(ctx context.Context, img *state.Image, w Watch, ar *gcapi.Archive) (*gcapi.ArchiveItem, error) {
	var it *gcapi.ArchiveItem
	var err error
	switch {
	case img.ItemPK != "":
		it, err = p.api.ArchiveItem(ctx, img.ItemPK)
		if gcapi.IsNotFound(err) && img.TargetItem {
			return nil, inputErrorf("%s names archive item %s, which does not exist or this token may not see", group.ItemFile, img.ItemPK)
		}
		if err != nil {
			return nil, fmt.Errorf("get archive item %s: %w", img.ItemPK, err)
		}
		if img.TargetItem && it.Archive != "" && it.Archive != ar.APIURL {
			return nil, inputErrorf("%s names archive item %s, which is not in archive %s", group.ItemFile, img.ItemPK, w.Archive)
		}
		return it, nil
	case img.ItemIntentAt.Before(p.started) || img.Attempts > 0:
		// A create may have happened without us hearing of it.
		if it, err = p.api.ArchiveItemByTitle(ctx, ar.PK, img.Title); err != nil {
			return nil, fmt.Errorf("find archive item %q: %w", img.Title, err)
		}
		if it != nil {
			return it, nil
		}
	}
	it, err = p.api.CreateArchiveItem(ctx, ar.APIURL, img.Title)
	if gcapi.IsTitleConflict(err) {
		it, err = p.api.ArchiveItemByTitle(ctx, ar.PK, img.Title)
		if err == nil && it == nil {
			err = fmt.Errorf("the title is taken but no item with it is visible")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("create archive item %q: %w", img.Title, err)
	}
	return it, nil
}

func lastSegment(u string) string {
	return path.Base(strings.TrimSuffix(u, "/"))
}
