// Package group decides which files of a drop folder form one image (or,
// in folder mode, one archive item), and when each is ready to send. It
// works on observations of files (path, size, modification time) and the
// few header fields it reads (DICOM, .mhd, .vms, Slidedat.ini, and the
// completeness proofs of package complete): no network, no state file, no
// goroutines. The watcher's notices come in
// through a Grouper; `gcingest plan` and the pipeline's folder layout use
// the same rules through Plan, LayoutFolder and ImageKind.
package group

import (
	"fmt"
	"time"

	"github.com/gcingest/gcingest/printable"
)

// DefaultIncompleteWait is watch.Spec.IncompleteWait when unset: far beyond any
// settle time (a share or a scanner that stalls mid-file for minutes), and
// short enough that a file that stays cut is reported the same day.
const DefaultIncompleteWait = time.Hour

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
	Watch string // watch.Spec.Path
	// Key identifies the group within its watch and stays the same while the
	// files do: the relative path of the main file, the folder's relative
	// path, or for DICOM "dicom:<folder>/<study>/<stack or series>/<sop
	// class>" (or "dicom:<file>" for a file that cannot be grouped).
	Key   string
	Kind  Kind
	Files []File // sorted by Rel
	// Label describes a DICOM group for people (folder, series number and
	// description, file count); empty otherwise.
	Label string
}

// Problem is something wrong with the files that the user must fix (a
// folder whose layout cannot work, files that do not make one image). The
// pipeline fails such an item with the message, word for word.
type Problem struct{ msg string }

func (e *Problem) Error() string { return e.msg }

func problemf(format string, args ...any) error {
	return &Problem{msg: fmt.Sprintf(format, args...)}
}

// Note is a text file written beside a failed group's files, saying why.
type Note struct {
	Rel  string // where, relative to the folder the files were moved to
	Text string
}

// FailureNotes returns the notes that explain why the group key (of kind k,
// with files rels, recorded as id) failed at at: one beside a folder
// item's folder, one beside each file of an image. The notes are read with
// cat or an editor, so the names and the reason (which quotes names) are
// escaped in their text (printable.String); the reason is on one line.
func FailureNotes(k Kind, key string, rels []string, id uint64, at time.Time, reason string) []Note {
	when := at.UTC().Format(time.RFC3339)
	reason = printable.String(reason)
	if k == KindFolder {
		return []Note{{Rel: key + ".error.txt", Text: fmt.Sprintf(
			"gcingest could not upload the folder %s (item %d, %s); nothing of it was attached unless said below:\n%s\n",
			printable.String(key), id, when, reason)}}
	}
	out := make([]Note, len(rels))
	for i, rel := range rels {
		out[i] = Note{Rel: rel + ".error.txt", Text: fmt.Sprintf("gcingest could not upload %s (image %d, %s):\n%s\n",
			printable.String(rel), id, when, reason)}
	}
	return out
}
