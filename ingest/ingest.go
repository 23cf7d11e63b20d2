// Package ingest owns the meaning of files: the grouper decides which files
// form one image and when it is complete and settled; the pipeline drives
// each image through its states to an archive item.
package ingest

import "time"

// Watch is one drop folder and what to do with what lands in it. main builds
// it from the config; the zero value of each field is its documented default
// only after the config package applied defaults.
type Watch struct {
	Path        string            // absolute root of the drop folder
	Archive     string            // archive slug
	Interface   string            // socket slug for the image
	Group       string            // auto | file | folder
	Settle      time.Duration     // unchanged this long before an image is ready
	Rescan      time.Duration     // full rescan interval
	Poll        bool              // rescans only, no file-system events
	Exclude     []string          // glob patterns on base names, never picked up
	AfterUpload string            // keep | move | delete
	DoneDir     string            // absolute; for move
	FailedDir   string            // absolute; may be empty (failed files stay in place)
	Replace     bool              // folder mode: may replace an existing value
	Title       string            // item title template: {path} {name} {hash}
	Values      map[string]string // folder mode: glob → interface slug
}

// Kind says how a group's files are sent to the server.
type Kind string

// Kinds of groups.
const (
	KindSingle Kind = "single" // one file, one upload
	KindMHD    Kind = "mhd"    // .mhd header plus its data file: two uploads, basenames unchanged
	KindZip    Kind = "zip"    // several files (DICOM series, .mrxs, .vms): one deterministic ZIP
	KindFolder Kind = "folder" // folder mode: one archive item whose files are its values
)

// File is one file of a group, as observed when the group became ready.
type File struct {
	Path    string // absolute
	Rel     string // relative to the watch root, slash-separated
	Size    int64
	ModTime time.Time
}

// Group is a set of files that form one image (or, in folder mode, one
// archive item), ready to upload.
type Group struct {
	Watch string // Watch.Path
	// Key identifies the group within its watch and stays the same while the
	// files do: the relative path of the main file, the folder's relative
	// path, or "dicom:<study>/<series>/<sop class>".
	Key   string
	Kind  Kind
	Files []File // sorted by Rel
}
