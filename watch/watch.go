// Package watch declares one drop folder and what to do with what lands in
// it: the [[watch]] table of the config (its toml tags are the keys), what
// the grouper needs and what the pipeline needs, in one type. It holds no
// behaviour beyond checking its enumerations; defaults and validation that
// names keys are the config package's, the running watch (fsnotify,
// rescans) is package watcher's.
package watch

import (
	"maps"
	"slices"
	"time"
)

// Spec is one watch. The zero value of a field is its documented default
// only after the config package applied defaults.
type Spec struct {
	Path      string `toml:"path"`      // absolute root of the drop folder
	Archive   string `toml:"archive"`   // archive slug
	Interface string `toml:"interface"` // socket slug for the image; folder mode: the main image's
	Group     Group  `toml:"group"`     // which files form one item; "" is auto

	Settle time.Duration `toml:"settle"` // unchanged this long before a group is ready
	// DICOMSettle is how long a DICOM series goes without a new or changed
	// file before it counts as complete (the stable age of a PACS); Settle
	// when shorter.
	DICOMSettle time.Duration `toml:"dicom_settle"`
	// IncompleteWait is how long a file that its own header proves cut
	// (package complete) holds its group back before the group goes on
	// anyway, to fail in the pipeline naming both sizes: a writer stalled
	// longer than this is not coming back. 0 means group.DefaultIncompleteWait
	// or 4 × Settle, whichever is longer; never shorter than Settle.
	IncompleteWait time.Duration `toml:"incomplete_wait"`
	// Deidentify says DICOM is de-identified before upload (always for
	// DICOM Image Set sockets); a DICOM file the reader cannot follow fails
	// rather than being sent.
	Deidentify bool `toml:"deidentify"`

	Rescan  time.Duration `toml:"rescan"`  // full rescan interval
	Poll    bool          `toml:"poll"`    // rescans only, no file-system events
	Exclude []string      `toml:"exclude"` // glob patterns on base names, never picked up

	AfterUpload AfterUpload `toml:"after_upload"` // what becomes of the files once their item is done
	DoneDir     string      `toml:"done_dir"`     // absolute; for move; never grouped when inside Path
	FailedDir   string      `toml:"failed_dir"`   // absolute; may be empty (failed files stay in place)

	Replace bool              `toml:"replace"` // folder mode: may replace an existing value
	Title   string            `toml:"title"`   // item title template: {path} {name} {hash}
	Values  map[string]string `toml:"values"`  // folder mode: glob → socket slug
}

// Clone returns a copy of s that shares no slice or map with it.
func (s Spec) Clone() Spec {
	s.Exclude = slices.Clone(s.Exclude)
	s.Values = maps.Clone(s.Values)
	return s
}

// Group says which files of a drop folder form one item.
type Group string

// Groupings.
const (
	GroupAuto   Group = "auto"   // by content: lone files, .mhd pairs, DICOM series, .mrxs/.vms
	GroupFile   Group = "file"   // every file an image of its own
	GroupFolder Group = "folder" // every subfolder one archive item, its files the values
)

// Valid reports whether g is one of the groupings (not "").
func (g Group) Valid() bool {
	return g == GroupAuto || g == GroupFile || g == GroupFolder
}

// AfterUpload says what becomes of an item's files once it is done.
type AfterUpload string

// Actions after upload.
const (
	AfterUploadKeep   AfterUpload = "keep"   // left where they are
	AfterUploadMove   AfterUpload = "move"   // moved to DoneDir
	AfterUploadDelete AfterUpload = "delete" // removed
)

// Valid reports whether a is one of the actions (not "").
func (a AfterUpload) Valid() bool {
	return a == AfterUploadKeep || a == AfterUploadMove || a == AfterUploadDelete
}
