// Package state is gcingest's durable memory: a typed store of images and
// their progress through the upload pipeline, kept in one bbolt file. It is
// the only package that touches bbolt. Every change is one transaction,
// committed (fsynced) before the caller performs the side effect that relies
// on it.
package state

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// State is where an image stands in the pipeline (docs/ARCHITECTURE.md,
// "States of an item").
type State string

// The states of an image.
const (
	Pending   State = "pending"   // recorded, not yet hashed or sent
	Uploading State = "uploading" // hashed; files being sent as multipart uploads
	Uploaded  State = "uploaded"  // every upload Completed
	Attaching State = "attaching" // PATCH with the uploads sent (or about to be)
	Importing State = "importing" // the server is importing the image
	Done      State = "done"      // the item holds the image; after-upload action pending
	Finished  State = "finished"  // after-upload action done
	Retrying  State = "retrying"  // transient error; tries again at NextAttempt
	Failed    State = "failed"    // permanent error, see LastError
	Duplicate State = "duplicate" // identical content already in the archive under the same title
	// Superseded is a failed image whose folder or file a newer image
	// landed: it no longer counts as failed (an alert on failed images
	// clears), and its story stays in status ID.
	Superseded State = "superseded"
	// Dismissed is a failed image the operator dismissed for good
	// (Dismiss): like Superseded, it no longer counts as failed and keeps
	// its story, but nothing newer landed.
	Dismissed State = "dismissed"
)

// Terminal reports whether nothing more will happen to an image in state s
// without a user asking for it (gcingest retry). Failed and Duplicate images
// still count as unfinished until their file action is recorded (ActionDone).
func (s State) Terminal() bool {
	return s == Finished || s == Failed || s == Duplicate || s == Superseded || s == Dismissed
}

// File is one source file of an image as it was hashed.
type File struct {
	Rel     string    `json:"rel"`  // relative to the watch root, slash-separated
	Path    string    `json:"path"` // absolute
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mtime"`
	SHA256  string    `json:"sha256,omitempty"` // hex; empty until hashed
	// Ident is the file's identity when it was hashed, where the platform
	// tells it: "device:inode:ctime" (package ingest, fileIdent). A file
	// with another identity may hold other bytes, whatever its size and
	// modification time say.
	Ident string `json:"ident,omitempty"`
	// Gathered marks a file of a DICOM series that an earlier record sent
	// and moved out of the drop folder, gathered again (Path is where it
	// is now) so that a late file resends the whole series: it is not the
	// grouper's, and stays where it is when the image fails.
	Gathered bool `json:"gathered,omitempty"`
}

// Part is one accepted part of a multipart upload.
type Part struct {
	Number int    `json:"n"`
	ETag   string `json:"etag"`
	Size   int64  `json:"size"`
}

// Upload is one multipart upload of an image: a source file (single, mhd)
// or the spooled ZIP of all its files.
type Upload struct {
	Filename   string    `json:"filename"` // basename sent to the server
	Path       string    `json:"path"`     // the bytes sent: a source file or the spool ZIP
	Size       int64     `json:"size"`
	PartSize   int64     `json:"part_size,omitempty"`
	IntentAt   time.Time `json:"intent_at,omitzero"` // set before the create request
	PK         string    `json:"pk,omitempty"`
	S3UploadID string    `json:"s3_upload_id,omitempty"`
	APIURL     string    `json:"api_url,omitempty"`
	Created    time.Time `json:"created,omitzero"` // server's creation time (expiry after ~24 h)
	Parts      []Part    `json:"parts,omitempty"`
	Completed  bool      `json:"completed,omitempty"`
	// ZipOf lists the source files (relative paths) zipped into Path, a
	// spool file rebuilt when missing: an image value made of several
	// files (a DICOM series, a whole-slide image with companions).
	ZipOf []string `json:"zip_of,omitempty"`
}

// How a value of an item is sent (the shapes of the archive item PATCH's
// "values" entries; docs/ARCHITECTURE.md, "One item, its values").
const (
	ValueImage = "image" // files → uploads → user_uploads; the server imports an image
	ValueFile  = "file"  // one file (or a JSON value as a file) → user_upload
	ValueJSON  = "json"  // a JSON value → value, applied in the request
)

// Value is one value of an archive item: which interface it goes to, how,
// from what, and whether the server shows it yet. An image dropped alone is
// an item with one value; a folder is an item with several.
type Value struct {
	// Interface is the socket slug. It is empty only in a lone image's
	// value migrated from schema 2, which took its interface from the
	// watch at every step; the pipeline fills it in from the watch when it
	// resumes the image.
	Interface  string          `json:"interface"`
	Kind       string          `json:"kind"`                  // ValueImage | ValueFile | ValueJSON
	SocketKind string          `json:"socket_kind,omitempty"` // the socket's kind label, e.g. "Float"
	Files      []string        `json:"files,omitempty"`       // source files, relative to the watch root
	Uploads    []int           `json:"uploads,omitempty"`     // indexes into Image.Uploads (their pks are there)
	JSON       json.RawMessage `json:"json,omitempty"`        // ValueJSON, and a JSON value sent as a file
	// Prev is what the item showed for the interface before our PATCH (an
	// image URL, a file URL, or "json:" and the value): the value counts as
	// arrived only when the item shows something else (or, for JSON, ours).
	Prev      string `json:"prev,omitempty"`
	Confirmed bool   `json:"confirmed,omitempty"` // the server shows the value
	// ImageName names a DICOM image set (a socket of kind DICOM Image
	// Set takes user_uploads with image_name).
	ImageName string `json:"image_name,omitempty"`
	// SessionPK is the upload session importing an image value, captured
	// from the session list while it still names our uploads: after the
	// build the server empties its user_uploads, so only this pk links a
	// session that fails later to the value.
	SessionPK string `json:"session_pk,omitempty"`
}

// Image is one image's durable record.
type Image struct {
	ID    uint64 `json:"id"`
	Watch string `json:"watch"` // watch root path
	Key   string `json:"key"`   // group key within the watch
	Kind  string `json:"kind"`  // ingest.Kind
	Files []File `json:"files"`
	Title string `json:"title,omitempty"`
	// Archive is the archive slug the image goes to, fixed when it is
	// recorded: a config edit applies to new images only. Empty in records
	// from before it was kept: the watch's archive then.
	Archive string `json:"archive,omitempty"`

	State       State     `json:"state"`
	RetryFrom   State     `json:"retry_from,omitempty"` // the state a Retrying image resumes in
	Attempts    int       `json:"attempts,omitempty"`   // consecutive failed attempts
	LastError   string    `json:"last_error,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// WaitingFor says what a waiting image waits for ("the import of
	// ct-image", "blocked: quota"), and Until when the agent stops waiting
	// and goes back to the server's truth (docs/PATTERNS.md, liveness).
	WaitingFor string    `json:"waiting_for,omitempty"`
	Until      time.Time `json:"until,omitzero"`
	// Resent counts the times the image's uploads were sent again after
	// the server lost them (expired before the import took them).
	Resent int `json:"resent,omitempty"`
	// BlockedSince is when the server's upload quota first refused this
	// image's upload, in the current stretch of refusals.
	BlockedSince time.Time `json:"blocked_since,omitzero"`

	Uploads []Upload `json:"uploads,omitempty"`

	// Values are the item's values, planned when its files are hashed
	// (empty while pending): one image value for an image dropped alone,
	// one per interface for a folder item.
	Values []Value `json:"values,omitempty"`
	// TargetItem says ItemPK came from the folder's item.txt: values are
	// added to that existing item, none is created.
	TargetItem bool `json:"target_item,omitempty"`

	ItemIntentAt time.Time `json:"item_intent_at,omitzero"` // set before the create-item request
	ItemPK       string    `json:"item_pk,omitempty"`
	PatchSentAt  time.Time `json:"patch_sent_at,omitzero"`
	SessionPK    string    `json:"session_pk,omitempty"`
	ImageURL     string    `json:"image_url,omitempty"`
	ImagePK      string    `json:"image_pk,omitempty"`
	// EmptyItem says the image failed after its item existed and the item
	// holds no value at all: the API cannot delete an item, so it is left
	// in the archive for someone to remove in the web interface.
	EmptyItem bool `json:"empty_item,omitempty"`

	// ActionDone records that the after-upload action (done, duplicate) or
	// the move to failed_dir (failed) was performed.
	ActionDone bool   `json:"action_done,omitempty"`
	MovedTo    string `json:"moved_to,omitempty"` // where the files went, if anywhere
	// DoneTarget is the done_dir folder the files go to once the import is
	// confirmed, committed with the PATCH intent so that the move and the
	// "finished" commit follow the confirmation at once.
	DoneTarget string `json:"done_target,omitempty"`
	// Joined are the group's files as last seen, when they changed (a
	// file added to a folder, say) after the image was recorded but
	// before it reached its item: they replace Files at the next hash.
	Joined []File `json:"joined,omitempty"`
	// RawNames holds, as bytes, the names above that are not valid UTF-8
	// (see rawnames.go); set when the record is written.
	RawNames map[string][]byte `json:"raw_names,omitempty"`

	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	Finished time.Time `json:"finished,omitzero"`

	// Errors is the image's history of errors, oldest first, the last
	// MaxErrors kept: Update appends each new LastError with its time, so
	// `gcingest status ID` tells the whole story.
	Errors []ErrorNote `json:"errors,omitempty"`
}

// ErrorNote is one error of an image, when it happened and in which state.
type ErrorNote struct {
	At    time.Time `json:"at"`
	State State     `json:"state"`
	Msg   string    `json:"msg"`
}

// MaxErrors is how many errors an image's record keeps.
const MaxErrors = 20

// Unfinished reports whether the pipeline still has work to do on img.
func (img *Image) Unfinished() bool { return !img.State.Terminal() || !img.ActionDone }

// Options tune Open.
type Options struct {
	ReadOnly bool          // for gcingest status while no agent runs
	Timeout  time.Duration // how long to wait for the file lock; default 1s
}

// ErrLocked is returned (wrapped) by Open when another process holds the file.
var ErrLocked = errors.New("state file is locked")

// ErrCorrupt is returned (wrapped) by Open when the file is not a readable
// state file.
var ErrCorrupt = errors.New("state file is damaged")

// ErrNotFound is returned by Get and Update for an unknown image ID.
var ErrNotFound = errors.New("no such image")

// Store is an open state file.
type Store struct {
	db       *bolt.DB
	path     string
	readOnly bool
	now      func() time.Time

	// Group commit: writers queue their change; whoever finds no commit
	// running commits everything queued in one transaction (one fsync
	// for many images), then hands the next batch, queued meanwhile, to
	// the first writer in it.
	wmu        sync.Mutex
	pending    []*writeOp
	committing bool
}

type writeOp struct {
	fn   func(tx *bolt.Tx) error
	err  error
	done chan struct{}
	lead chan struct{} // this op's writer is to commit the next batch
}

// dirtyError marks a failure after an op began writing: its transaction
// must not commit.
type dirtyError struct{ err error }

func (e *dirtyError) Error() string { return e.err.Error() }
func (e *dirtyError) Unwrap() error { return e.err }

// Bucket names and the schema version.
var (
	bucketMeta    = []byte("meta")
	bucketImages  = []byte("images")
	bucketByState = []byte("by_state") // state \x00 id(8) → nil
	bucketByKey   = []byte("by_key")   // watch \x00 key \x00 id(8) → nil
	bucketCounts  = []byte("counts")   // state → number of images in it (8, big-endian); schema 5
	keySchema     = []byte("schema")
)

// SchemaVersion is the version this build writes.
//
// Version 2 added folder items (Image.Values, Image.TargetItem,
// Upload.ZipOf). The change is additive JSON, so a version 1 record reads
// as it always did (no Values: one image under the watch's interface) and
// the migration changes no data. The version still goes up so that an
// older gcingest refuses the file instead of misreading a folder item
// (it would fail it and move its files to failed_dir).
//
// Version 3 makes every item one state machine: a lone image's record
// holds its one value in Values like a folder item's (Image.PrevValue
// became Value.Prev), and a ZIP image's spool is its upload's ZipOf
// (Image.Spool is gone). See migrateV2.
//
// Version 4 retires the legacy state "item", which no step wrote any more
// but the pipeline still dispatched to the item step: its records become
// Uploaded, the state that step handles. See migrateV3.
//
// Version 5 keeps the number of images in each state (bucket counts),
// written in the transaction of every move, so that status and /metrics
// read a few keys instead of the whole state index; the migration counts
// the index once (migrateV4). An older gcingest would not keep the counts
// right, so it must refuse the file.
const SchemaVersion = 5

// migration upgrades a file from version From to From+1 inside one
// transaction.
type migration struct {
	From int
	Fn   func(tx *bolt.Tx) error
}

// migrations lists every upgrade step, oldest first. Add one entry per
// schema change; never edit a released one.
func migrations() []migration {
	return []migration{
		{From: 1, Fn: func(*bolt.Tx) error { return nil }}, // folder items: new optional fields only
		{From: 2, Fn: migrateV2},                           // one item state machine
		{From: 3, Fn: migrateV3},                           // the legacy state "item" is gone
		{From: 4, Fn: migrateV4},                           // counts by state
	}
}

// Open opens (creating if needed, unless read-only) the state file at path.
// A file held by another process fails after opts.Timeout with an error
// wrapping ErrLocked; a damaged file fails with one wrapping ErrCorrupt that
// says how to move it aside.
func Open(path string, opts Options) (*Store, error) {
	return open(path, opts, SchemaVersion, migrations())
}

func open(path string, opts Options, version int, migs []migration) (s *Store, err error) {
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	if opts.ReadOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("open state file %s: %w", path, err)
		}
	}
	// bbolt panics on some kinds of damage, and reading a mapped page
	// past the end of a truncated file faults; a damaged file must be an
	// error the user can act on, not a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, corruptError(path, fmt.Errorf("%v", r))
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:  opts.Timeout,
		ReadOnly: opts.ReadOnly,
		// The freelist is kept in the file: rebuilding it on open walks
		// every page in a goroutine that panics, uncatchably, on damage.
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return nil, fmt.Errorf("another gcingest is using %s: %w", path, ErrLocked)
		case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum),
			errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrInvalidMapping):
			return nil, corruptError(path, err)
		}
		// What is not the operating system's complaint (permissions, a
		// full disk) is bbolt's about the content, e.g. "file size too
		// small": the file is damaged.
		var pe *fs.PathError
		var errno syscall.Errno
		if !errors.As(err, &pe) && !errors.As(err, &errno) {
			return nil, corruptError(path, err)
		}
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	s = &Store{db: db, path: path, readOnly: opts.ReadOnly, now: time.Now}
	if err := s.check(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.migrate(version, migs); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func corruptError(path string, cause error) error {
	return fmt.Errorf("%w: %s cannot be read (%v); nothing was changed. Stop gcingest, move the file aside "+
		"(e.g. mv %s %s.damaged) and start again: images already uploaded will be found again by their "+
		"titles, not uploaded twice", ErrCorrupt, path, cause, path, path)
}

// check walks every page so that damage is found at open, not halfway
// through a run. A read-only open (gcingest status, plan) checks only that
// the file is not truncated: walking every page would read the whole file,
// which for 100,000 images is most of status's time and all of its memory,
// to show a few records; its reads turn what damage they meet into an
// error instead (view).
func (s *Store) check() error {
	return s.view(func(tx *bolt.Tx) error {
		fi, err := os.Stat(s.path)
		if err != nil {
			return fmt.Errorf("stat state file %s: %w", s.path, err)
		}
		if tx.Size() > fi.Size() {
			return corruptError(s.path, fmt.Errorf("the file is %d bytes but its pages need %d: truncated", fi.Size(), tx.Size()))
		}
		if s.readOnly {
			return nil
		}
		var first error
		for err := range tx.Check() { // drain: the checker goroutine must end before tx does
			if first == nil {
				first = err
			}
		}
		if first != nil {
			return corruptError(s.path, first)
		}
		return nil
	})
}

// view runs fn in a read transaction. In a read-only store, which did not
// walk the file at open (check), a damaged page that bbolt trips over (a
// panic, or a fault reading past the end of the mapping) is an error
// wrapping ErrCorrupt rather than a crash; bbolt rolls the transaction
// back as the panic passes.
func (s *Store) view(fn func(tx *bolt.Tx) error) (err error) {
	if !s.readOnly {
		return s.db.View(fn)
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = corruptError(s.path, fmt.Errorf("%v", r))
		}
	}()
	return s.db.View(fn)
}

func (s *Store) migrate(version int, migs []migration) error {
	var have int
	err := s.view(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketMeta); b != nil {
			if v := b.Get(keySchema); len(v) == 8 {
				have = int(binary.BigEndian.Uint64(v))
			} else if v != nil {
				return corruptError(s.path, fmt.Errorf("schema version of %d bytes", len(v)))
			}
		} else if tx.Bucket(bucketImages) != nil {
			return corruptError(s.path, errors.New("images without a schema version"))
		}
		return nil
	})
	if err != nil {
		return err
	}
	switch {
	case have > version:
		return fmt.Errorf("state file %s has schema version %d; this gcingest knows up to %d: use a newer gcingest", s.path, have, version)
	case have == version:
		return nil
	case s.readOnly:
		if have == 0 {
			return nil // an empty file: nothing to show
		}
		return fmt.Errorf("state file %s has schema version %d; start gcingest run once to upgrade it to %d", s.path, have, version)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if have == 0 {
			for _, name := range [][]byte{bucketMeta, bucketImages, bucketByState, bucketByKey} {
				if _, err := tx.CreateBucketIfNotExists(name); err != nil {
					return fmt.Errorf("create bucket %s in %s: %w", name, s.path, err)
				}
			}
			have = 1
		}
		for have < version {
			i := slices.IndexFunc(migs, func(m migration) bool { return m.From == have })
			if i < 0 {
				return fmt.Errorf("state file %s: no migration from schema version %d", s.path, have)
			}
			if err := migs[i].Fn(tx); err != nil {
				return fmt.Errorf("migrate state file %s from version %d: %w", s.path, have, err)
			}
			have++
		}
		return tx.Bucket(bucketMeta).Put(keySchema, binary.BigEndian.AppendUint64(nil, uint64(have)))
	})
}

// Path returns the file's path.
func (s *Store) Path() string { return s.path }

// Close closes the file.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close state file %s: %w", s.path, err)
	}
	return nil
}

func idKey(id uint64) []byte { return binary.BigEndian.AppendUint64(nil, id) }

func stateKey(st State, id uint64) []byte {
	return append(append([]byte(st), 0), idKey(id)...)
}

func keyPrefix(watch, key string) []byte {
	b := append([]byte(watch), 0)
	b = append(b, key...)
	return append(b, 0)
}

func get(tx *bolt.Tx, id uint64) (*Image, error) {
	b := tx.Bucket(bucketImages)
	if b == nil {
		return nil, ErrNotFound
	}
	v := b.Get(idKey(id))
	if v == nil {
		return nil, ErrNotFound
	}
	var img Image
	if err := json.Unmarshal(v, &img); err != nil {
		return nil, fmt.Errorf("decode image %d: %w", id, err)
	}
	restoreRawNames(&img)
	return &img, nil
}

func put(tx *bolt.Tx, img *Image, old *Image) error {
	keepRawNames(img)
	v, err := json.Marshal(img)
	if err != nil {
		return fmt.Errorf("encode image %d: %w", img.ID, err)
	}
	if err := tx.Bucket(bucketImages).Put(idKey(img.ID), v); err != nil {
		return err
	}
	bs := tx.Bucket(bucketByState)
	if old != nil && old.State != img.State {
		if err := bs.Delete(stateKey(old.State, img.ID)); err != nil {
			return err
		}
		if err := count(tx, old.State, -1); err != nil {
			return err
		}
	}
	if old == nil || old.State != img.State {
		if err := bs.Put(stateKey(img.State, img.ID), nil); err != nil {
			return err
		}
		if err := count(tx, img.State, 1); err != nil {
			return err
		}
	}
	if old == nil {
		return tx.Bucket(bucketByKey).Put(append(keyPrefix(img.Watch, img.Key), idKey(img.ID)...), nil)
	}
	return nil
}

// count adds delta to the number of images in state st, in the
// transaction that moves them. A file of a schema before 5 has no counts
// (tests write such files); its migration counts the state index.
func count(tx *bolt.Tx, st State, delta int) error {
	b := tx.Bucket(bucketCounts)
	if b == nil {
		return nil
	}
	var n uint64
	if v := b.Get([]byte(st)); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	switch {
	case delta < 0 && n < uint64(-delta):
		// Only a bug of this package's can get here; refusing the write
		// keeps the counts from drifting away from the records.
		return fmt.Errorf("%d %s images counted, %d leaving: the counts disagree with the state index", n, st, -delta)
	case int(n)+delta == 0:
		return b.Delete([]byte(st))
	}
	return b.Put([]byte(st), binary.BigEndian.AppendUint64(nil, uint64(int(n)+delta)))
}

func (s *Store) write(fn func(tx *bolt.Tx) error) error {
	if s.readOnly {
		return fmt.Errorf("state file %s is open read-only", s.path)
	}
	op := &writeOp{fn: fn, done: make(chan struct{}), lead: make(chan struct{}, 1)}
	s.wmu.Lock()
	s.pending = append(s.pending, op)
	if s.committing {
		s.wmu.Unlock()
		select {
		case <-op.done:
			return op.err
		case <-op.lead:
			// The last committer handed over: commit what is queued.
		}
		s.wmu.Lock()
	}
	s.committing = true
	batch := s.pending
	s.pending = nil
	s.wmu.Unlock()
	s.commit(batch)
	// One batch per committer: the writers that queued meanwhile get the
	// next, led by the first of them, so nobody waits for batches that
	// are not theirs.
	s.wmu.Lock()
	if len(s.pending) > 0 {
		s.pending[0].lead <- struct{}{}
	} else {
		s.committing = false
	}
	s.wmu.Unlock()
	return op.err
}

// commit runs the ops in one transaction. An op that fails before writing
// (its fn refused) just reports its error; one that fails while writing
// spoils the transaction, so then every op runs again in its own.
func (s *Store) commit(batch []*writeOp) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, op := range batch {
			op.err = op.fn(tx)
			var d *dirtyError
			if errors.As(op.err, &d) {
				return op.err
			}
		}
		return nil
	})
	switch {
	case err == nil:
	case len(batch) == 1:
		batch[0].err = err
	default:
		for _, op := range batch {
			s.commit([]*writeOp{op})
		}
		return
	}
	for _, op := range batch {
		close(op.done)
	}
}

// Create records a new image, assigning its ID (monotonic) and timestamps.
// A new image without a state is Pending; one in a state not in Creatable
// is refused (an error wrapping ErrTransition).
func (s *Store) Create(img *Image) error {
	_, err := s.CreateUnless(img, nil)
	return err
}

// CreateUnless records img unless skip, given every image already recorded
// for the same (Watch, Key) in ID order, returns true; the check and the
// write are one transaction. It reports whether img was created.
func (s *Store) CreateUnless(img *Image, skip func(existing []Image) bool) (bool, error) {
	var each func(int, []Image) bool
	if skip != nil {
		each = func(_ int, existing []Image) bool { return skip(existing) }
	}
	created, err := s.CreateEach([]*Image{img}, each)
	if err != nil {
		return false, err
	}
	return created[0], nil
}

// CreateEach is CreateUnless for each of imgs in turn (skip is given the
// index too, and sees the images created before it in the same call), all
// in one transaction: images that become ready together, a backlog found
// at start, cost one commit between them, not one each. It reports which
// were created; on an error none was.
func (s *Store) CreateEach(imgs []*Image, skip func(i int, existing []Image) bool) ([]bool, error) {
	created := make([]bool, len(imgs))
	err := s.write(func(tx *bolt.Tx) error {
		clear(created) // run again on its own when a batch it shared failed
		for _, img := range imgs {
			if err := checkCreate(img.Key, cmp.Or(img.State, Pending)); err != nil {
				return err // before any write: nothing to undo
			}
		}
		now := s.now().UTC()
		for i, img := range imgs {
			if skip != nil {
				existing, err := byKey(tx, img.Watch, img.Key)
				if err != nil {
					return &dirtyError{err} // earlier images of this call may be written
				}
				if skip(i, existing) {
					continue
				}
			}
			id, err := tx.Bucket(bucketImages).NextSequence()
			if err != nil {
				return &dirtyError{err}
			}
			img.ID = id
			if img.State == "" {
				img.State = Pending
			}
			img.Created, img.Updated = now, now
			created[i] = true
			if err := put(tx, img, nil); err != nil {
				return &dirtyError{err}
			}
		}
		return nil
	})
	if err != nil {
		what := "new image"
		if len(imgs) > 0 {
			what += " " + imgs[0].Key
		}
		if len(imgs) > 1 {
			what = fmt.Sprintf("%d new images (%s and others)", len(imgs), imgs[0].Key)
		}
		return make([]bool, len(imgs)), fmt.Errorf("record %s in %s: %w", what, s.path, err)
	}
	return created, nil
}

// Get returns the image with that ID, or an error wrapping ErrNotFound.
func (s *Store) Get(id uint64) (Image, error) {
	var img *Image
	err := s.view(func(tx *bolt.Tx) (err error) {
		img, err = get(tx, id)
		return err
	})
	if err != nil {
		return Image{}, fmt.Errorf("read image %d from %s: %w", id, s.path, err)
	}
	return *img, nil
}

// Update applies fn to the image with that ID and commits the result in one
// transaction, keeping the indexes right. If fn returns an error, or moves
// the image to a state Transitions does not allow from its own (an error
// wrapping ErrTransition), nothing is written. It returns the image as
// committed.
func (s *Store) Update(id uint64, fn func(*Image) error) (Image, error) {
	var out Image
	err := s.write(func(tx *bolt.Tx) error {
		old, err := get(tx, id)
		if err != nil {
			return err
		}
		img := *old
		img.Files = slices.Clone(old.Files)
		img.Uploads = cloneUploads(old.Uploads)
		img.Values = CloneValues(old.Values)
		if err := fn(&img); err != nil {
			return err
		}
		img.ID, img.Watch, img.Key = old.ID, old.Watch, old.Key // identity never changes
		if err := checkMove(id, old.State, img.State); err != nil {
			return err // before any write: the transaction commits nothing of it
		}
		if img.State == Finished {
			dropFinished(&img)
		}
		img.Updated = s.now().UTC()
		if img.LastError != "" && img.LastError != old.LastError {
			img.Errors = append(slices.Clone(old.Errors), ErrorNote{At: img.Updated, State: old.State, Msg: img.LastError})
			if n := len(img.Errors); n > MaxErrors {
				img.Errors = img.Errors[n-MaxErrors:]
			}
		}
		if err := put(tx, &img, old); err != nil {
			return &dirtyError{err}
		}
		out = img
		return nil
	})
	if err != nil {
		return Image{}, fmt.Errorf("update image %d in %s: %w", id, s.path, err)
	}
	return out, nil
}

// dropFinished clears what a finished image's record no longer needs: the
// accepted parts of its completed uploads, kept only to resume an upload
// (one ETag and size per part: hundreds for a large file). Nothing moves a
// finished record again (retry refuses it), and status counts a completed
// upload's size as sent. The rest stays: its Files keep the same files
// from being sent twice (and pruning looks at them), its uploads' pks and
// its errors are its story in status ID.
func dropFinished(img *Image) {
	for i := range img.Uploads {
		if img.Uploads[i].Completed {
			img.Uploads[i].Parts = nil
		}
	}
}

func cloneUploads(in []Upload) []Upload {
	out := slices.Clone(in)
	for i := range out {
		out[i].Parts = slices.Clone(out[i].Parts)
		out[i].ZipOf = slices.Clone(out[i].ZipOf)
	}
	return out
}

// CloneValues returns a deep copy of vs.
func CloneValues(vs []Value) []Value {
	out := slices.Clone(vs)
	for i := range out {
		out[i].Files = slices.Clone(out[i].Files)
		out[i].Uploads = slices.Clone(out[i].Uploads)
		out[i].JSON = slices.Clone(out[i].JSON)
	}
	return out
}

// List returns the images in any of the given states, by ID; no states means
// every image. It reads the state index, so listing the few unfinished images
// of a large file is cheap.
func (s *Store) List(states ...State) ([]Image, error) {
	var out []Image
	err := s.view(func(tx *bolt.Tx) error {
		images := tx.Bucket(bucketImages)
		if images == nil {
			return nil
		}
		if len(states) == 0 {
			return images.ForEach(func(k, v []byte) error {
				var img Image
				if err := json.Unmarshal(v, &img); err != nil {
					return fmt.Errorf("decode image %x: %w", k, err)
				}
				restoreRawNames(&img)
				out = append(out, img)
				return nil
			})
		}
		c := tx.Bucket(bucketByState).Cursor()
		for _, st := range states {
			prefix := append([]byte(st), 0)
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				img, err := get(tx, binary.BigEndian.Uint64(k[len(prefix):]))
				if err != nil {
					return err
				}
				out = append(out, *img)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list images in %s: %w", s.path, err)
	}
	slices.SortFunc(out, func(a, b Image) int { return cmpID(a.ID, b.ID) })
	return out, nil
}

func cmpID(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Unfinished returns every image the pipeline still has work on, by ID.
func (s *Store) Unfinished() ([]Image, error) {
	imgs, err := s.List(Pending, Uploading, Uploaded, Attaching, Importing, Done, Retrying, Failed, Duplicate)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(imgs, func(img Image) bool { return !img.Unfinished() }), nil
}

// Counts returns how many images are in each state. It reads the counts
// kept with every move (schema 5), a few keys whatever the number of
// images; a file without them (empty, never written) counts its index.
func (s *Store) Counts() (map[State]int, error) {
	var out map[State]int
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCounts)
		if b == nil {
			var err error
			out, err = countIndex(tx)
			return err
		}
		out = map[State]int{}
		return b.ForEach(func(k, v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("count of %q images is %d bytes, not 8", k, len(v))
			}
			out[State(k)] = int(binary.BigEndian.Uint64(v))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("count images in %s: %w", s.path, err)
	}
	return out, nil
}

// countIndex counts the images in each state by walking the state index.
func countIndex(tx *bolt.Tx) (map[State]int, error) {
	out := map[State]int{}
	b := tx.Bucket(bucketByState)
	if b == nil {
		return out, nil
	}
	// Keys are sorted by state: count runs, making one string per state
	// rather than one per image.
	var cur []byte
	n := 0
	err := b.ForEach(func(k, _ []byte) error {
		i := bytes.IndexByte(k, 0)
		if i <= 0 {
			return nil
		}
		if !bytes.Equal(k[:i], cur) {
			if n > 0 {
				out[State(cur)] += n
			}
			cur, n = bytes.Clone(k[:i]), 0
		}
		n++
		return nil
	})
	if n > 0 {
		out[State(cur)] += n
	}
	return out, err
}

// ByKey returns every image recorded for (watch, key), by ID.
func (s *Store) ByKey(watch, key string) ([]Image, error) {
	var out []Image
	err := s.view(func(tx *bolt.Tx) (err error) {
		out, err = byKey(tx, watch, key)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list images of %s in %s: %w", key, s.path, err)
	}
	return out, nil
}

func byKey(tx *bolt.Tx, watch, key string) ([]Image, error) {
	b := tx.Bucket(bucketByKey)
	if b == nil {
		return nil, nil
	}
	var out []Image
	prefix := keyPrefix(watch, key)
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if len(k) != len(prefix)+8 {
			continue // a longer key that shares the prefix cannot: keys hold no \x00
		}
		img, err := get(tx, binary.BigEndian.Uint64(k[len(prefix):]))
		if err != nil {
			return nil, err
		}
		out = append(out, *img)
	}
	return out, nil
}

// Delete removes the images with these IDs and their index entries in one
// transaction, and returns how many it removed; IDs not recorded are
// skipped. Only records nothing will look at again may go: a record is
// what keeps its files from being sent twice.
func (s *Store) Delete(ids ...uint64) (int, error) {
	n := 0
	err := s.write(func(tx *bolt.Tx) error {
		n = 0
		for _, id := range ids {
			img, err := get(tx, id)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if err := tx.Bucket(bucketImages).Delete(idKey(id)); err != nil {
				return &dirtyError{err}
			}
			if err := tx.Bucket(bucketByState).Delete(stateKey(img.State, id)); err != nil {
				return &dirtyError{err}
			}
			if err := count(tx, img.State, -1); err != nil {
				return &dirtyError{err}
			}
			if err := tx.Bucket(bucketByKey).Delete(append(keyPrefix(img.Watch, img.Key), idKey(id)...)); err != nil {
				return &dirtyError{err}
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("delete %d images from %s: %w", len(ids), s.path, err)
	}
	return n, nil
}
