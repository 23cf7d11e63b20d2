package gcapitest

import (
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"sort"
	"time"
)

// state is the fake's database. The Server's mu guards it.
type state struct {
	offset time.Duration // fake clock = wall clock + offset

	rnd *mrand.Rand // list order keys and pks; its own source (see Server.rmu)

	archives  map[string]*archive
	ifaces    map[string]*iface // by slug
	items     map[string]*item
	titled    map[string]int // items by archive pk and title (titleKey): the database's unique index
	uploads   map[string]*upload
	sessions  map[string]*session
	images    map[string]*image
	civs      map[int]*civ // every value ever made, for file downloads
	jobs      []*job
	notes     []Notification
	nextIface int
	nextCIV   int
}

func newState(rnd *mrand.Rand) state {
	return state{
		rnd:       rnd,
		archives:  map[string]*archive{},
		ifaces:    map[string]*iface{},
		items:     map[string]*item{},
		titled:    map[string]int{},
		uploads:   map[string]*upload{},
		sessions:  map[string]*session{},
		images:    map[string]*image{},
		civs:      map[int]*civ{},
		nextIface: 1,
		nextCIV:   1000,
	}
}

// addItem stores it, indexed by its title.
func (st *state) addItem(it *item) {
	st.items[it.pk] = it
	st.titled[titleKey(it.archive, it.title)]++
}

// retitle gives it a new title, keeping the index.
func (st *state) retitle(it *item, title string) {
	st.titled[titleKey(it.archive, it.title)]--
	it.title = title
	st.titled[titleKey(it.archive, it.title)]++
}

func titleKey(archivePK, title string) string { return archivePK + "\x00" + title }

// uuid returns a random version-4 UUID from the seeded source.
func (st *state) uuid() string {
	a, b := st.rnd.Uint64(), st.rnd.Uint64()
	a = a&^(0xf<<12) | 4<<12
	b = b&^(3<<62) | 2<<62
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", a>>32, (a>>16)&0xffff, a&0xffff, b>>48, b&0xffffffffffff)
}

// orderKey gives an object its place in unordered list results. Objects
// get a new key whenever they change, the way an updated row can move in
// PostgreSQL's heap order, so a client walking pages while things change
// sees duplicates and must de-duplicate by pk.
func (st *state) orderKey() uint64 { return st.rnd.Uint64() }

type archive struct {
	pk, slug, title string
	access          Access
	key             uint64
}

type iface struct {
	pk                 int
	slug, title, kind  string
	superKind, relPath string
	jsonKind           bool
}

type item struct {
	pk, title, archive string // archive pk
	values             []*civ
	key                uint64
}

func (it *item) valueFor(slug string) (int, *civ) {
	for i, v := range it.values {
		if v.iface.slug == slug {
			return i, v
		}
	}
	return -1, nil
}

// setValue replaces the item's value for the value's interface.
func (it *item) setValue(v *civ) {
	if i, _ := it.valueFor(v.iface.slug); i >= 0 {
		it.values[i] = v
		return
	}
	it.values = append(it.values, v)
}

// civ is a ComponentInterfaceValue.
type civ struct {
	pk    int
	iface *iface
	value json.RawMessage // Value sockets
	image string          // image pk
	file  *blob           // File sockets
}

// blob is stored bytes: the concatenation of segment files on disk.
type blob struct {
	name string // file name shown in URLs
	segs []string
	size int64
}

type upload struct {
	pk, filename, s3id, status string
	created                    time.Time
	parts                      map[int]*part // while Initialized
	object                     *blob         // once Completed
	key                        uint64
	seq                        int // part file sequence
}

type part struct {
	etag     string
	size     int64
	modified time.Time
	path     string
}

func (u *upload) partsSize() int64 {
	var n int64
	for _, p := range u.parts {
		n += p.size
	}
	return n
}

func (u *upload) sortedParts() []*partN {
	out := make([]*partN, 0, len(u.parts))
	for n, p := range u.parts {
		out = append(out, &partN{n, p})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].n < out[j].n })
	return out
}

type partN struct {
	n int
	*part
}

type session struct {
	pk, status, errMsg string
	imageSet           []string // image pks
	uploads            []string // upload pks
	key                uint64
}

type image struct {
	pk, name, typ string // typ is "MHD" or "TIFF" (cases/models.py ImageFile)
	filePK        string
	study, series string          // DICOM UIDs, "" for other formats
	imageSetID    string          // a DICOM image set (AWS HealthImaging); no files
	dicomSet      *storedImageSet // the set's de-identified instances (dicomsets.go)
	content       *blob
	w, h, d       *int
	origin        string // session pk, "" for setup images
	key           uint64
}

type jobKind int

const (
	jobImage jobKind = iota // user_uploads → session → image
	jobFile                 // user_upload → file value
	jobDICOM                // user_uploads + image_name → DICOM image set
	jobLink                 // add_image_to_object after a build succeeded
)

// job is an asynchronous import scheduled by a PATCH.
type job struct {
	kind    jobKind
	session string
	item    string
	iface   string
	uploads []string
	name    string // image_name of a DICOM image set; the linked check's error for jobLink
	due     time.Time
}
