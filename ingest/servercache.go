package ingest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/state"
)

// serverCache is what the pipeline knows of the server, shared by every
// worker: archives and sockets by slug, asked once per run (a changed
// configuration starts a new pipeline); each archive's titles, from one
// listing shared by every image (titleIndex); and the last listing of
// upload sessions. A restart with hundreds of images in flight costs one
// listing, not one per image.
type serverCache struct {
	api API
	now func() time.Time

	mu       sync.Mutex // guards the maps; never held across a request
	archives map[string]*gcapi.Archive
	sockets  map[string]*gcapi.Interface
	titles   map[string]*titleIndex // by archive pk

	// sessMu is held while the upload sessions are listed, so images
	// waiting for a listing share one.
	sessMu   sync.Mutex
	sessAt   time.Time // when the last listing began; zero: never listed
	sessions []gcapi.UploadSession
}

func newServerCache(api API, now func() time.Time) *serverCache {
	return &serverCache{
		api:      api,
		now:      now,
		archives: map[string]*gcapi.Archive{},
		sockets:  map[string]*gcapi.Interface{},
		titles:   map[string]*titleIndex{},
	}
}

// archive returns the archive with that slug, asked once per run.
func (c *serverCache) archive(ctx context.Context, slug string) (*gcapi.Archive, error) {
	c.mu.Lock()
	a := c.archives[slug]
	c.mu.Unlock()
	if a != nil {
		return a, nil
	}
	a, err := c.api.ArchiveBySlug(ctx, slug)
	if err != nil {
		// The configuration's problem, not the image's: keep retrying
		// (visible in status) rather than failing every image.
		return nil, &configError{fmt.Errorf("find archive %s: %w", slug, err)}
	}
	c.mu.Lock()
	c.archives[slug] = a
	c.mu.Unlock()
	return a, nil
}

// socket returns the interface with that slug, asked once per run.
// Unknown slugs are the folder's (or the config's) problem: permanent.
func (c *serverCache) socket(ctx context.Context, slug string) (*gcapi.Interface, error) {
	c.mu.Lock()
	s := c.sockets[slug]
	c.mu.Unlock()
	if s != nil {
		return s, nil
	}
	s, err := c.api.InterfaceBySlug(ctx, slug)
	if gcapi.IsNotFound(err) {
		return nil, inputErrorf("the server knows no interface %q", slug)
	}
	if err != nil {
		return nil, fmt.Errorf("find interface %s: %w", slug, err)
	}
	c.mu.Lock()
	c.sockets[slug] = s
	c.mu.Unlock()
	return s, nil
}

// titleIndex maps the titles of one archive's items to their pks, from one
// listing of the archive shared by every image: a restart with hundreds of
// images in flight lists the archive once, not once per image. It keeps
// titles and pks only: an archive of half a million items costs tens of
// MB, not the hundreds its values would.
type titleIndex struct {
	mu  sync.Mutex
	at  time.Time // when the last listing began; zero: never listed
	pks map[string]string
	// listing is closed when the listing under way ends; nil when none
	// is. No lock is held across the requests of a listing: a lookup that
	// needs one waits for it on this channel.
	listing chan struct{}
}

func (x *titleIndex) add(title, pk string) {
	x.mu.Lock()
	if x.pks != nil {
		x.pks[title] = pk
	}
	x.mu.Unlock()
}

// size is how many items the index knows of; listed says whether the
// archive was ever listed (else the size is not known).
func (x *titleIndex) size() (n int, listed bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.pks), !x.at.IsZero()
}

// index returns the title index of the archive archivePK, empty at first.
func (c *serverCache) index(archivePK string) *titleIndex {
	c.mu.Lock()
	defer c.mu.Unlock()
	x := c.titles[archivePK]
	if x == nil {
		x = &titleIndex{}
		c.titles[archivePK] = x
	}
	return x
}

// created notes an item we created, so that later lookups of its title
// find it without listing the archive again.
func (c *serverCache) created(ar *gcapi.Archive, it *gcapi.ArchiveItem) {
	c.index(ar.PK).add(it.Title, it.PK)
}

// listArchive brings x up to a listing of the archive begun after after,
// listing it unless one began after that already (or one under way, once
// it ends, did). It returns the items listed, or nil when another's
// listing served.
func (c *serverCache) listArchive(ctx context.Context, x *titleIndex, ar *gcapi.Archive, after time.Time) ([]gcapi.ArchiveItem, error) {
	for {
		x.mu.Lock()
		if x.at.After(after) {
			x.mu.Unlock()
			return nil, nil
		}
		if wait := x.listing; wait != nil {
			x.mu.Unlock()
			select {
			case <-wait:
				continue // it may have begun too early for us: look again
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		done := make(chan struct{})
		x.listing = done
		x.mu.Unlock()

		began := c.now()
		items, err := c.api.ArchiveItems(ctx, ar.PK)
		x.mu.Lock()
		x.listing = nil
		close(done)
		if err == nil {
			x.pks = make(map[string]string, len(items))
			for i := range items {
				x.pks[items[i].Title] = items[i].PK
			}
			x.at = began
		}
		x.mu.Unlock()
		return items, err
	}
}

// itemByTitle returns the archive's item with that title, or nil, from a
// listing begun after after (listing the archive again when the index is
// older), and then gets the item itself, so its values are current.
func (c *serverCache) itemByTitle(ctx context.Context, ar *gcapi.Archive, title string, after time.Time) (*gcapi.ArchiveItem, error) {
	x := c.index(ar.PK)
	if _, err := c.listArchive(ctx, x, ar, after); err != nil {
		return nil, fmt.Errorf("find archive item %q: %w", title, err)
	}
	x.mu.Lock()
	pk := x.pks[title]
	x.mu.Unlock()
	if pk == "" {
		return nil, nil
	}
	it, err := c.api.ArchiveItem(ctx, pk)
	if gcapi.IsNotFound(err) {
		return nil, nil // deleted since the listing
	}
	if err != nil {
		return nil, fmt.Errorf("get archive item %s (%q): %w", pk, title, err)
	}
	return it, nil
}

// sessionList is the account's upload sessions from a listing begun after
// after, shared by every image that needs one: each importing image needs
// the list once it has sent its PATCH, and one listing serves all that had.
func (c *serverCache) sessionList(ctx context.Context, after time.Time) ([]gcapi.UploadSession, error) {
	c.sessMu.Lock()
	defer c.sessMu.Unlock()
	if !c.sessAt.After(after) {
		began := c.now()
		sessions, err := c.api.UploadSessions(ctx)
		if err != nil {
			return nil, fmt.Errorf("list upload sessions: %w", err)
		}
		c.sessions, c.sessAt = sessions, began
	}
	return c.sessions, nil
}

// heldFiles maps watch, file and content to the item of an image that
// landed, so that files sent once under one grouping are not sent again
// under another (the watch's group changed, files kept). The records that
// landed are read from the state file once, when first asked.
type heldFiles struct {
	store Store

	mu  sync.Mutex
	pks map[string]string // by heldKey; nil until read
}

// itemOf returns the item that holds every file of img (same watch, same
// relative path, same content), sent by an earlier record of this state
// file that landed, or "".
func (h *heldFiles) itemOf(img *state.Image) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pks == nil {
		landed, err := h.store.List(state.Done, state.Finished)
		if err != nil {
			return "", fmt.Errorf("list images already sent: %w", err)
		}
		h.pks = map[string]string{}
		for i := range landed {
			h.addLocked(&landed[i])
		}
	}
	pk := ""
	for _, f := range img.Files {
		got := h.pks[heldKey(img.Watch, f)]
		if got == "" || (pk != "" && got != pk) || f.SHA256 == "" {
			return "", nil
		}
		pk = got
	}
	return pk, nil
}

// add notes the files of an image that landed. Until the index is first
// read there is nothing to add to: that read finds the image.
func (h *heldFiles) add(img *state.Image) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.addLocked(img)
}

// addLocked is add with h.mu held.
func (h *heldFiles) addLocked(img *state.Image) {
	if h.pks == nil || img.ItemPK == "" {
		return
	}
	for _, f := range img.Files {
		if f.SHA256 != "" {
			h.pks[heldKey(img.Watch, f)] = img.ItemPK
		}
	}
}

func heldKey(watch string, f state.File) string {
	return watch + "\x00" + f.Rel + "\x00" + f.SHA256
}
