package state

import (
	"errors"
	"fmt"
	"slices"
)

// States lists every state an image's record can be in, in pipeline order.
var States = []State{Pending, Uploading, Uploaded, Attaching, Importing, Done, Finished, Retrying, Failed, Duplicate, Superseded, Dismissed}

// Transition is one move of an image's record from one state to another,
// and the step of package ingest that makes it.
type Transition struct {
	From, To State
	Step     string
}

// Transitions is the item state machine (docs/ARCHITECTURE.md, "States of
// an item"): every move a commit may make, and which step makes it. Update
// refuses any other; a write that keeps the state is always allowed.
//
// A commit can move a record more than one step along the main path: the
// hash and the plan are not committed on their own but with the image's
// next save (ingest's saveLater, docs/PATTERNS.md rule 1), and the last
// upload's completion with the item intent. Those moves are listed with
// the step whose commit carries them.
var Transitions = []Transition{
	// The main path.
	{Pending, Uploading, "stepHash (committed with the first upload's pk: stepUpload, saveLater)"},
	{Pending, Uploaded, "stepHash, JSON values only (committed by stepItem's save when a file joined)"},
	{Pending, Attaching, "stepItem (JSON values only: the hash's plan carried by the item intent)"},
	{Uploading, Uploaded, "stepUpload (no upload left to send)"},
	{Uploading, Attaching, "stepItem (the last upload's completion carried by the item intent)"},
	{Uploaded, Attaching, "stepItem (item pk and PATCH intent recorded)"},
	{Attaching, Importing, "sendPatch, stepReattach (toImporting)"},
	{Attaching, Done, "markDone (stepReattach: the item shows every value already)"},
	{Attaching, Finished, "markDone (stepReattach; the files' action done in the same commit)"},
	{Importing, Done, "markDone (stepPoll: imported; a move to done_dir follows)"},
	{Importing, Finished, "markDone (stepPoll: imported, the files' action done in the same commit)"},
	{Done, Finished, "stepAfter"},

	// Already in the archive: nothing (more) is sent.
	{Pending, Duplicate, "alreadyInArchive, markDuplicate (hash's plan carried)"},
	{Uploading, Duplicate, "alreadyInArchive, markDuplicate"},
	{Uploaded, Duplicate, "stepItem (markDuplicate)"},
	{Attaching, Duplicate, "recheck (markDuplicate: another agent attached every value)"},

	// Back along the main path.
	{Uploading, Pending, "backToPending (a file changed or joined after the hash)"},
	{Uploaded, Pending, "backToPending (stepItem: a file joined the group)"},
	{Attaching, Uploading, "resend (sendPatch: the uploads expired before the PATCH)"},
	{Importing, Uploading, "resend (stepPoll deadline: the uploads expired before an import took them)"},
	{Failed, Pending, "retry (gcingest retry: start over)"},
	{Failed, Superseded, "supersedeOlder (a newer image of the same folder or file landed)"},
	{Failed, Dismissed, "Store.Dismiss (gcingest forget, retry --drop: the operator dismissed it)"},

	// Transient errors wait in Retrying and resume where they were
	// (Image.RetryFrom; an empty one is Pending).
	{Pending, Retrying, "handle (transient: retrying)"},
	{Uploading, Retrying, "handle (transient: retrying)"},
	{Uploaded, Retrying, "handle (transient: retrying)"},
	{Attaching, Retrying, "handle (transient: retrying)"},
	{Importing, Retrying, "handle (transient: retrying)"},
	{Retrying, Pending, "process (retry due: resume in RetryFrom)"},
	{Retrying, Uploading, "process (retry due: resume in RetryFrom)"},
	{Retrying, Uploaded, "process (retry due: resume in RetryFrom)"},
	{Retrying, Attaching, "process (retry due: resume in RetryFrom)"},
	{Retrying, Importing, "process (retry due: resume in RetryFrom, toImporting)"},

	// Permanent errors. Done and Duplicate never fail: their fate is
	// known, only their files' action is tried again (handle).
	{Pending, Failed, "handle (permanent error)"},
	{Uploading, Failed, "handle (permanent error)"},
	{Uploaded, Failed, "handle (permanent error)"},
	{Attaching, Failed, "handle (permanent error)"},
	{Importing, Failed, "handle (permanent error)"},
	{Retrying, Failed, "handle (permanent error)"},
}

// Creatable are the states Create records an image in: Pending, what the
// pipeline records (ingest's Submit), and the terminal and waiting states
// in which tests record an image as an earlier run left it.
var Creatable = []State{Pending, Retrying, Failed, Finished}

// ErrTransition is returned (wrapped) by Update for a move that is not in
// Transitions, and by Create for a state not in Creatable.
var ErrTransition = errors.New("not a move of the item state machine (state.Transitions)")

// TransitionError is a move of an image that Transitions does not allow;
// errors.Is(err, ErrTransition) holds for it.
type TransitionError struct {
	ID       uint64
	From, To State
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("image %d from %s to %s: %v", e.ID, e.From, e.To, ErrTransition)
}

// Unwrap makes errors.Is(err, ErrTransition) true.
func (e *TransitionError) Unwrap() error { return ErrTransition }

// Allowed reports whether a record may move from one state to another: the
// move is in Transitions, or keeps the state.
func Allowed(from, to State) bool {
	return from == to || slices.ContainsFunc(Transitions, func(t Transition) bool { return t.From == from && t.To == to })
}

// checkMove refuses a move of image id that the table does not allow.
func checkMove(id uint64, from, to State) error {
	if Allowed(from, to) {
		return nil
	}
	return &TransitionError{ID: id, From: from, To: to}
}

// checkCreate refuses to record a new image in a state not in Creatable.
func checkCreate(key string, st State) error {
	if slices.Contains(Creatable, st) {
		return nil
	}
	return fmt.Errorf("new image %s in state %s: %w", key, st, ErrTransition)
}
