package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/folderlock"
	"github.com/gcingest/gcingest/ingest"
)

// folderLocks holds the lock of every watched folder for as long as it is
// watched, across SIGHUP reloads. It is used by Run's goroutine only.
type folderLocks struct {
	owner string // written into each lock file for the other agent's message
	held  map[string]*folderlock.Lock
	// unlocked are the folders that cannot hold a lock: their watches
	// re-check an item before each PATCH (ingest.Watch.Unlocked).
	unlocked map[string]bool
	log      *slog.Logger
}

func newFolderLocks(statePath string, log *slog.Logger) *folderLocks {
	host, _ := os.Hostname()
	return &folderLocks{
		owner:    lockOwner(host, os.Getpid(), statePath),
		held:     map[string]*folderlock.Lock{},
		unlocked: map[string]bool{},
		log:      log,
	}
}

// lockOwner is what an agent writes into each lock file it holds.
func lockOwner(host string, pid int, statePath string) string {
	return fmt.Sprintf("host %s, pid %d, state %s", host, pid, statePath)
}

// ownLock reports whether a lock file's owner (lockOwner, and the time
// folderlock adds) is an agent of this host with the state file statePath:
// the running agent of the config being checked, not a second one.
func ownLock(owner, statePath string) bool {
	host, _ := os.Hostname()
	rest, ok := strings.CutPrefix(owner, fmt.Sprintf("host %s, pid ", host))
	if !ok {
		return false
	}
	_, rest, ok = strings.Cut(rest, ", state ")
	return ok && (rest == statePath || strings.HasPrefix(rest, statePath+", since "))
}

// acquire locks every folder of cfg not locked yet. A folder held by another
// agent is an error (and what was newly locked here is released again); a
// folder that cannot hold a lock (read-only, a file system without locks) is
// logged and watched all the same.
func (fl *folderLocks) acquire(cfg *config.Config) error {
	var added []string
	for _, w := range cfg.Watch {
		dir := filepath.Clean(w.Path)
		if _, ok := fl.held[dir]; ok {
			continue
		}
		l, err := folderlock.Acquire(dir, fl.owner)
		if errors.Is(err, folderlock.ErrUnsupported) {
			if !fl.unlocked[dir] {
				fl.log.Warn("drop folder cannot hold gcingest's lock file; a second agent watching it would not be noticed, "+
					"so each item is read again right before its values are attached", "watch", dir, "err", err)
			}
			fl.unlocked[dir] = true
			continue
		}
		delete(fl.unlocked, dir)
		if err != nil {
			for _, d := range added {
				fl.held[d].Close()
				delete(fl.held, d)
			}
			return err
		}
		fl.held[dir] = l
		added = append(added, dir)
	}
	return nil
}

// mark sets Unlocked on the watches whose folder holds no lock of ours.
func (fl *folderLocks) mark(ws []ingest.Watch) []ingest.Watch {
	for i := range ws {
		ws[i].Unlocked = fl.unlocked[filepath.Clean(ws[i].Path)]
	}
	return ws
}

// keepOnly releases the locks of folders cfg no longer watches.
func (fl *folderLocks) keepOnly(cfg *config.Config) {
	keep := map[string]bool{}
	for _, w := range cfg.Watch {
		keep[filepath.Clean(w.Path)] = true
	}
	for dir, l := range fl.held {
		if !keep[dir] {
			l.Close()
			delete(fl.held, dir)
		}
	}
	for dir := range fl.unlocked {
		if !keep[dir] {
			delete(fl.unlocked, dir)
		}
	}
}

// close releases every lock.
func (fl *folderLocks) close() {
	for dir, l := range fl.held {
		l.Close()
		delete(fl.held, dir)
	}
}
