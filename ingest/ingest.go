// Package ingest drives each recorded item through its states to an
// archive item: hash and plan its values (hash.go), upload (upload.go,
// spool.go), find or create the item (item.go), attach its values in one
// PATCH and reconcile after a crash (attach.go), wait for the import
// (poll.go), and act on its files afterwards (after.go). Which files form
// an item, and when it is ready, is package group's business.
package ingest

import (
	"time"

	"github.com/gcingest/gcingest/ingest/group"
)

// Watch is one drop folder and what to do with what lands in it. main builds
// it from the config; the zero value of each field is its documented default
// only after the config package applied defaults.
type Watch struct {
	Path        string        // absolute root of the drop folder
	Archive     string        // archive slug
	Interface   string        // socket slug for the image
	Group       string        // auto | file | folder
	Settle      time.Duration // unchanged this long before an image is ready
	DICOMSettle time.Duration // a DICOM series is complete after this long without a new file
	// IncompleteWait is how long a file its own header proves cut (package
	// complete) holds its image back before the image goes on, to fail
	// naming both sizes; 0: group.DefaultIncompleteWait.
	IncompleteWait time.Duration
	Deidentify     bool              // DICOM de-identified before upload (always for DICOM Image Set sockets)
	Rescan         time.Duration     // full rescan interval
	Poll           bool              // rescans only, no file-system events
	Exclude        []string          // glob patterns on base names, never picked up
	AfterUpload    string            // keep | move | delete
	DoneDir        string            // absolute; for move
	FailedDir      string            // absolute; may be empty (failed files stay in place)
	Replace        bool              // folder mode: may replace an existing value
	Title          string            // item title template: {path} {name} {hash}
	Values         map[string]string // folder mode: glob → interface slug
	// Unlocked says the folder could not hold the agent's lock file (a
	// read-only share, a file system without locks), so another agent may
	// watch it unnoticed: the item is read again right before each PATCH
	// and a value another agent attached is not set a second time.
	Unlocked bool
}

// Grouping returns what package group needs of w.
func (w Watch) Grouping() group.Watch {
	return group.Watch{Path: w.Path, Group: w.Group, Settle: w.Settle, DICOMSettle: w.DICOMSettle, IncompleteWait: w.IncompleteWait, Deidentify: w.Deidentify, Exclude: w.Exclude,
		DoneDir: w.DoneDir, FailedDir: w.FailedDir, Interface: w.Interface, Values: w.Values}
}

// The group package's types, under the names the pipeline has always used.
type (
	Kind  = group.Kind
	File  = group.File
	Group = group.Group
)

// Kinds of groups.
const (
	KindSingle = group.KindSingle
	KindMHD    = group.KindMHD
	KindZip    = group.KindZip
	KindFolder = group.KindFolder
)
