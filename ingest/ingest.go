// Package ingest drives each recorded item through its states to an
// archive item: hash and plan its values (hash.go), upload (upload.go,
// spool.go), find or create the item (item.go), attach its values in one
// PATCH and reconcile after a crash (attach.go), wait for the import
// (poll.go), and act on its files afterwards (after.go). Which files form
// an item, and when it is ready, is package group's business.
package ingest

import (
	"github.com/gcingest/gcingest/ingest/group"
	"github.com/gcingest/gcingest/watch"
)

// Watch is one drop folder, as configured (package watch declares it once
// for the config, the grouper and the pipeline), and what the agent found
// out about it at start.
type Watch struct {
	watch.Spec
	// Unlocked says the folder could not hold the agent's lock file (a
	// read-only share, a file system without locks), so another agent may
	// watch it unnoticed: the item is read again right before each PATCH
	// and a value another agent attached is not set a second time.
	Unlocked bool
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
