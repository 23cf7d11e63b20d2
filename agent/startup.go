package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/dicom"
	"github.com/gcingest/gcingest/folderlock"
	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/ingest"
	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/status"
	"github.com/gcingest/gcingest/watch"
)

// Level weighs one finding of the start-up.
type Level int

const (
	// LevelOK is a finding run starts with and says nothing of.
	LevelOK Level = iota
	// LevelWarn is a finding run starts with and logs as a warning.
	LevelWarn
	// LevelFail is a finding run refuses to start for.
	LevelFail
)

// Finding is one result of Startup: a line of `gcingest check`, and what
// run logs (a warning) or returns (a failure), in the same words.
type Finding struct {
	Level Level
	// Text names the config key, what was found and, for a problem, what
	// to do. For LevelFail it is Err's message.
	Text string
	// Err, with LevelFail, is the error run returns; its type picks the
	// exit code (*ConfigError 2, gcapi.ErrUnauthorized 3,
	// *folderlock.HeldError and state.ErrLocked 4, else 1).
	Err error
}

// Startup is run's start-up, which `gcingest check` runs too, so that
// check says what run will do: the same checks, in the same order, with the
// same words, and the same verdict (check's FAIL is run's refusal, its WARN
// what run starts with and logs).
//
// With Hold it is run's: the state file is opened, every drop folder
// locked, the status port and the DICOM ports bound, and all are kept for the agent (Close
// releases them). Without it (check) nothing is kept and nothing is
// created but a probe file, made and removed again in each folder: the
// state file is left alone (a running agent holds it), a folder's lock
// file is only read (folderlock.Holder), the port bound and closed again.
type Startup struct {
	Config *config.Config
	// Client asks the server about archives, upload rights and interfaces;
	// nil leaves the server unchecked.
	Client *gcapi.Client
	// Hold makes the start-up run's (see the type's comment).
	Hold bool
	// Note hears each finding as it is made.
	Note func(Finding)

	// locks, with Hold, takes the folder locks and logs a folder that
	// cannot hold one; Run's own, kept across reloads.
	locks *folderLocks
	// writable proves a folder writable; nil: writableDir. Tests running
	// as root, whom permission bits do not stop, set their own.
	writable func(string) error

	err      error          // the first failure
	drops    map[int]bool   // watches whose drop folder can be read
	readOnly map[int]bool   // ... and not written
	state    *state.Store   // with Hold
	listener net.Listener   // with Hold
	dicom    []net.Listener // with Hold: per [[dicom]] table, TLS-wrapped where configured
	// running says a gcingest of this config runs now (it holds a drop
	// folder's lock, or answers on the status port): without Hold, a port
	// it holds is no failure.
	running  bool
	archives map[string]bool
	ifaces   map[string]*gcapi.Interface
	ifaceErr map[string]error
}

// Run makes every start-up check in run's order: the config's warnings,
// the folders, the state file, the folder locks, the status port, the
// DICOM listeners, the server. With Hold it returns the first failure's error at once (what it
// acquired is released by Close); without, it goes on, so that every
// problem is reported, and returns the first failure's error at the end. A
// token the server refused ends the server's checks either way: every
// other answer would be a refusal too.
func (s *Startup) Run(ctx context.Context) error {
	for _, w := range s.Config.Warnings() {
		s.warn("%s", w)
	}
	steps := []func(context.Context){
		func(context.Context) { s.checkFolders() },
		func(context.Context) { s.openState() },
		func(context.Context) { s.checkLocks() },
		s.checkStatusPort,
		s.checkDICOM,
		s.checkServer,
	}
	for _, step := range steps {
		step(ctx)
		if s.err != nil && s.Hold {
			return s.err
		}
	}
	return s.err
}

// Close releases what Run acquired with Hold and was not taken over.
func (s *Startup) Close() {
	if s.listener != nil {
		s.listener.Close()
	}
	for _, ln := range s.dicom {
		if ln != nil {
			ln.Close()
		}
	}
	if s.state != nil {
		s.state.Close()
	}
}

func (s *Startup) note(f Finding) {
	if f.Level == LevelFail && s.err == nil {
		s.err = f.Err
	}
	if s.Note != nil {
		s.Note(f)
	}
}

func (s *Startup) ok(format string, a ...any) {
	s.note(Finding{Level: LevelOK, Text: fmt.Sprintf(format, a...)})
}

func (s *Startup) warn(format string, a ...any) {
	s.note(Finding{Level: LevelWarn, Text: fmt.Sprintf(format, a...)})
}

// fail notes err, a failure; a config mistake is a *ConfigError already.
func (s *Startup) fail(err error) {
	s.note(Finding{Level: LevelFail, Text: err.Error(), Err: err})
}

func (s *Startup) failConfig(format string, a ...any) {
	s.fail(&ConfigError{fmt.Errorf(format, a...)})
}

// checkFolders checks each drop folder and where its files are moved.
func (s *Startup) checkFolders() {
	s.drops, s.readOnly = map[int]bool{}, map[int]bool{}
	for i, w := range s.Config.Watch {
		key := fmt.Sprintf("watch[%d]", i)
		if err := readableDir(w.Path); err != nil {
			s.failConfig("%s.path: %w", key, err)
			continue
		}
		s.drops[i] = true
		switch err := s.probe(w.Path); {
		case err == nil:
			s.ok("%s.path %s: readable and writable", key, w.Path)
		case s.Config.IsSpool(i):
			// The DICOM listener writes every instance it receives there.
			s.failConfig("%s.path %s: not writable by this user, and it is a [[dicom]] spool, where received instances are written: "+
				"give the user gcingest runs as write permission on the folder: %w", key, w.Path, err)
		case w.AfterUpload == watch.AfterUploadMove || w.AfterUpload == watch.AfterUploadDelete || w.FailedDir != "":
			// run would fail every move or delete, again and again.
			s.failConfig("%s.path %s: not writable by this user, so files cannot be moved or deleted from it (after_upload = %q%s); "+
				"give the user gcingest runs as write permission on the folder, or use after_upload = \"keep\" and no failed_dir: %w",
				key, w.Path, w.AfterUpload, map[bool]string{true: ", failed_dir set"}[w.FailedDir != ""], err)
		default:
			s.readOnly[i] = true
			s.warn("%s.path %s: readable, but not writable by this user: the agent cannot keep its lock file %s there, "+
				"so a second agent on this folder would go unnoticed (each item is read again before attaching values instead)", key, w.Path, folderlock.Name)
		}
		dirs := []struct{ name, path string }{}
		if w.AfterUpload == watch.AfterUploadMove {
			dirs = append(dirs, struct{ name, path string }{"done_dir", w.DoneDir})
		}
		if w.FailedDir != "" {
			dirs = append(dirs, struct{ name, path string }{"failed_dir", w.FailedDir})
		}
		for _, d := range dirs {
			s.checkTarget(key+"."+d.name, d.path, w.Path)
		}
	}
	if err := CheckResolvedFolders(s.Config); err != nil {
		s.fail(err)
	}
}

// checkTarget checks a folder files are moved to (done_dir, failed_dir) from
// the drop folder. A folder not there yet is made by the first move: run
// makes it at once, check proves the folder above it writable.
func (s *Startup) checkTarget(key, dir, drop string) {
	probe, made := dir, ""
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if s.Hold {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				s.failConfig("%s: create %s: %w", key, dir, err)
				return
			}
		} else {
			probe = existingParent(dir)
		}
		made = " (made by run)"
	}
	if err := s.probe(probe); err != nil {
		if made != "" {
			s.failConfig("%s %s: does not exist, and run could not make it: %w", key, dir, err)
		} else {
			s.failConfig("%s: %w", key, err)
		}
		return
	}
	same, err := SameFileSystem(drop, probe)
	switch {
	case err != nil:
		s.failConfig("%s %s: %w", key, dir, err)
	case !same:
		// run copies across file systems (written, synced, then the
		// source removed): it works, so it is a warning of what it
		// costs, not a failure of what run does.
		s.warn("%s %s: not on the same file system as %s; files are moved by copying each (written, synced, then removed from the drop folder), "+
			"slower than a rename: a folder on the same disk or share makes each move one rename", key, dir, drop)
	default:
		s.ok("%s %s: writable%s, same file system", key, dir, made)
	}
}

func (s *Startup) probe(dir string) error {
	if s.writable != nil {
		return s.writable(dir)
	}
	return writableDir(dir)
}

// existingParent returns the nearest folder above p that exists.
func existingParent(p string) string {
	for {
		parent := filepath.Dir(p)
		if parent == p {
			return p
		}
		p = parent
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
}

// openState opens the state file. Without Hold it is not opened (a
// running agent holds it, and check must not make it): its folder is
// proved writable, or the folder above one run would make. Run proves it
// too, so that both say the same of a folder it may not write.
func (s *Startup) openState() {
	p := s.Config.State.Path
	dir := filepath.Dir(p)
	probe := dir
	if s.Hold {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			s.fail(fmt.Errorf("state.path %s: run could not make or write it: %w", p, err))
			return
		}
	} else if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		probe = existingParent(dir)
	}
	if err := s.probe(probe); err != nil {
		s.fail(fmt.Errorf("state.path %s: run could not make or write it: %w", p, err))
		return
	}
	// A state file another user made (`sudo gcingest run` once) is what
	// the service then cannot open. Opening it for writing takes no lock:
	// a running agent keeps its own.
	if f, err := os.OpenFile(p, os.O_RDWR, 0); err == nil {
		f.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		s.fail(fmt.Errorf("state.path %s: run could not open it for writing: %w; give it to the user gcingest runs as", p, err))
		return
	}
	if !s.Hold {
		s.ok("state.path %s: its folder is writable", p)
		return
	}
	st, err := state.Open(p, state.Options{})
	if errors.Is(err, syscall.ENOSPC) {
		err = fmt.Errorf("%w; free disk space there and start gcingest again", err)
	}
	if err != nil {
		s.fail(err)
		return
	}
	s.state = st
}

// checkLocks takes (Hold) or reads each drop folder's lock. A lock held by
// an agent of this host and this state file is this config's running
// agent: check re-run on a live service finds it, and passes it.
func (s *Startup) checkLocks() {
	if s.Hold {
		// Every drop folder is readable: Run stopped at the first that
		// was not. One it cannot write was warned of above: the locks
		// need not say it again (they log a folder they find unlocked
		// for the first time only).
		for i, w := range s.Config.Watch {
			if s.readOnly[i] {
				s.locks.unlocked[filepath.Clean(w.Path)] = true
			}
		}
		if err := s.locks.acquire(s.Config); err != nil {
			s.fail(err)
		}
		return
	}
	for i, w := range s.Config.Watch {
		if !s.drops[i] {
			continue
		}
		key := fmt.Sprintf("watch[%d].path", i)
		err := folderlock.Holder(filepath.Clean(w.Path))
		var held *folderlock.HeldError
		switch {
		case err == nil:
			s.ok("%s %s: no other gcingest watches it", key, w.Path)
		case errors.As(err, &held) && ownLock(held.Owner, s.Config.State.Path):
			s.running = true
			s.ok("%s %s: watched by the running gcingest of this config (%s)", key, w.Path, held.Owner)
		case errors.As(err, &held):
			s.fail(err)
		case errors.Is(err, folderlock.ErrUnsupported):
			s.warn("%s %s: the file system refuses gcingest's lock file; a second agent watching it would not be noticed: %v", key, w.Path, err)
		default:
			s.warn("%s %s: could not read who watches it: %v", key, w.Path, err)
		}
	}
}

// checkStatusPort opens the status listener. A port in use is a state
// that passes (another program, the previous process not yet gone): a
// runtime error, exit 1, which the service manager restarts; a config error
// (exit 2) it would never restart. Without Hold, a port held by a running
// gcingest that answers there is this config's own agent: re-checking a
// live service's config must not fail for it.
func (s *Startup) checkStatusPort(ctx context.Context) {
	listen := s.Config.Status.Listen
	if listen == "" {
		return
	}
	ln, err := status.Listen(listen)
	if err == nil {
		if s.Hold {
			s.listener = ln
		} else {
			ln.Close()
		}
		s.ok("status.listen %s: free", listen)
		return
	}
	if !s.Hold {
		// A report of no image (ID 0 is never given) costs the agent one
		// index read, whatever its backlog; a program that does not answer
		// does not hold check up for long.
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if rep, ferr := status.Fetch(fctx, listen, status.Query{ID: "0"}); ferr == nil {
			s.running = true
			s.ok("status.listen %s: held by the running gcingest %s: ok", listen, rep.Version)
			return
		}
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		s.fail(fmt.Errorf("status.listen: %w; exiting so that the service manager starts gcingest again once the port is free", err))
		return
	}
	s.failConfig("status.listen: %w", err)
}

// verifyTimeout bounds the start-up check of the server.
const verifyTimeout = 90 * time.Second

// checkServer checks, before any work starts, that the token works and each
// watch's archive (with upload rights) and interfaces exist and fit. A
// permanent answer (401, 404, a view-only archive) stops run with a message
// naming the key. A network failure does not: a service started at boot
// may come up before the network, and the pipeline retries on its own.
func (s *Startup) checkServer(ctx context.Context) {
	if s.Client == nil {
		return
	}
	// A server that answers a byte at a time must not hold the start for
	// the client's whole retry budget (minutes per call): past this, the
	// agent starts and the pipeline waits for the server as on any outage.
	vctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	s.archives = map[string]bool{}
	s.ifaces, s.ifaceErr = map[string]*gcapi.Interface{}, map[string]error{}
	for i, w := range s.Config.Watch {
		err := s.checkWatchServer(vctx, i, w)
		if err == nil {
			continue
		}
		if ctx.Err() == nil && !errors.Is(err, gcapi.ErrUnauthorized) {
			// Unreachable, or an answer that makes no sense (a proxy's
			// page, a body too large): what the pipeline meets later it
			// retries, so the start does not end on it either; the agent
			// stays up, whatever supervises it.
			s.warn("could not check %s with the server, so run starts anyway and uploads wait until the server answers: %v", s.Config.GrandChallenge.URL, err)
		}
		return
	}
}

// checkWatchServer checks watch i with the server; an error ends the
// server's checks (the failure, if it is one, is noted already).
func (s *Startup) checkWatchServer(ctx context.Context, i int, w watch.Spec) error {
	key := fmt.Sprintf("watch[%d]", i)
	if err := s.checkArchive(ctx, key, w.Archive); err != nil {
		return err
	}
	it, err := s.iface(ctx, w.Interface)
	switch {
	case gcapi.IsNotFound(err):
		s.failConfig("%s.interface %q: %s: %w", key, w.Interface, noInterface, err)
	case err != nil:
		return s.serverError(key+".interface", w.Interface, err)
	case it.Kind == ingest.KindDICOMImageSet:
		s.checkDICOMSet(key, w)
	case it.SuperKind != gcapi.SuperKindImage:
		s.failConfig("%s.interface %q: is a %q interface (%s); images need an image interface such as \"generic-medical-image\"", key, w.Interface, it.Kind, it.SuperKind)
	default:
		s.ok("%s.interface %q: %s", key, w.Interface, it.Kind)
	}
	pats := make([]string, 0, len(w.Values))
	for p := range w.Values {
		pats = append(pats, p)
	}
	slices.Sort(pats)
	for _, p := range pats {
		slug := w.Values[p]
		it, err := s.iface(ctx, slug)
		wantImage := isImagePattern(p)
		switch {
		case gcapi.IsNotFound(err):
			s.failConfig("%s.values %q = %q: %s: %w", key, p, slug, noInterface, err)
		case err != nil:
			return s.serverError(key+".values", slug, err)
		case wantImage && it.SuperKind != gcapi.SuperKindImage:
			s.failConfig("%s.values %q = %q: image files need an image interface, this one is %q (%s)", key, p, slug, it.Kind, it.SuperKind)
		case !wantImage && it.SuperKind == gcapi.SuperKindImage:
			s.failConfig("%s.values %q = %q: is an image interface, but %q matches files that are not images; use a file or value interface", key, p, slug, p)
		default:
			s.ok("%s.values %q = %q: %s", key, p, slug, it.Kind)
		}
	}
	return nil
}

// noInterface says what to do about a slug the server does not know.
const noInterface = "the server has no such interface (socket); gcingest interfaces lists the slugs"

// checkArchive checks an archive once per slug: it exists, and the account
// may add items to it, proved without creating one (gcapi.Client.CanUpload):
// an account that can only view the archive would pass every other check
// and then fail every image with "archive: Invalid hyperlink - Object does
// not exist.".
func (s *Startup) checkArchive(ctx context.Context, key, slug string) error {
	if ok, seen := s.archives[slug]; seen {
		if ok {
			s.ok("%s.archive %q: as above", key, slug)
		}
		return nil
	}
	s.archives[slug] = false
	a, err := s.Client.ArchiveBySlug(ctx, slug)
	switch {
	case gcapi.IsNotFound(err):
		s.failConfig("%s.archive %q: not found; check the slug (gcingest archives lists those this account sees) and that this account is an editor or uploader of it (with a wrong token every archive looks missing): %w", key, slug, err)
		return nil
	case err != nil:
		return s.serverError(key+".archive", slug, err)
	}
	can, err := s.Client.CanUpload(ctx, a.APIURL)
	switch {
	case err != nil:
		return s.serverError(key+".archive", slug, err)
	case !can:
		s.failConfig("%s.archive %q: %q is visible to this account, but it may not add items to it; ask an editor of the archive to add the account as an uploader", key, slug, a.Title)
	default:
		s.archives[slug] = true
		s.ok("%s.archive %q: %q, this account may upload", key, slug, a.Title)
	}
	return nil
}

// serverError notes a refused token as a failure, and returns err, which
// ends the server's checks.
func (s *Startup) serverError(key, slug string, err error) error {
	if errors.Is(err, gcapi.ErrUnauthorized) {
		s.fail(fmt.Errorf("token: the server at %s refused it (asked for %s %q): %w", s.Config.GrandChallenge.URL, key, slug, err))
	}
	return err
}

func (s *Startup) iface(ctx context.Context, slug string) (*gcapi.Interface, error) {
	if _, seen := s.ifaces[slug]; !seen {
		s.ifaces[slug], s.ifaceErr[slug] = s.Client.InterfaceBySlug(ctx, slug)
	}
	return s.ifaces[slug], s.ifaceErr[slug]
}

// imageExts are the file name endings the server imports as images.
var imageExts = []string{".mha", ".mhd", ".raw", ".zraw", ".nii", ".nii.gz", ".nrrd", ".tif", ".tiff",
	".svs", ".ndpi", ".mrxs", ".vms", ".scn", ".bif", ".dcm", ".png", ".jpg", ".jpeg"}

// isImagePattern reports whether the pattern's files are images, judged by
// the pattern's ending ("overlay*.mha" yes, "*.pdf" no).
func isImagePattern(p string) bool {
	p = strings.ToLower(p)
	for _, e := range imageExts {
		if strings.HasSuffix(p, e) || strings.HasSuffix(p, e+"*") {
			return true
		}
	}
	return false
}

// checkDICOMSet checks a watch whose socket is of kind DICOM Image Set:
// only DICOM series go there, always de-identified with Grand Challenge's
// procedure, which accepts only the SOP classes it has rules for.
func (s *Startup) checkDICOMSet(key string, w watch.Spec) {
	p, err := dicom.DefaultProcedure()
	if err != nil {
		s.fail(fmt.Errorf("%s.interface %q: DICOM Image Set: load the embedded de-identification procedure: %w", key, w.Interface, err))
		return
	}
	if w.Group == watch.GroupFolder {
		s.failConfig("%s.interface %q: DICOM Image Set sockets are not supported in folder mode; use group = \"auto\"", key, w.Interface)
		return
	}
	if err := ingest.DeidTitleProblem(w.Title); err != nil {
		s.failConfig("%s.title: %w (the interface %q is a DICOM Image Set, always de-identified); use \"{hash}\" and fixed text, or leave title unset", key, err, w.Interface)
		return
	}
	var classes []string
	for _, c := range p.SOPClasses() {
		if n := sopClassName[c]; n != "" {
			c += " (" + n + ")"
		}
		classes = append(classes, c)
	}
	s.ok("%s.interface %q: DICOM Image Set: DICOM series only, each de-identified here with Grand Challenge's procedure %s, "+
		"which accepts SOP classes %s; other files dropped there fail", key, w.Interface, p.Version, strings.Join(classes, ", "))
}

// sopClassName names the SOP classes the procedure may list.
var sopClassName = map[string]string{
	"1.2.840.10008.5.1.4.1.1.2":   "CT Image Storage",
	"1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
	"1.2.840.10008.5.1.4.1.1.4":   "MR Image Storage",
	"1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
}

// readableDir proves p a folder this user can list.
func readableDir(p string) error {
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s is not a folder this user can see (%w): create it, mount the share, or fix the path", p, err)
		}
		return fmt.Errorf("open %s: %w", p, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", p, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is a file, not a folder", p)
	}
	if _, err := f.Readdirnames(1); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("list %s: %w (does the user gcingest runs as have read permission?)", p, err)
	}
	return nil
}

// writableDir proves a folder writable by creating and removing a file in
// it: permission bits, ACLs and read-only mounts all show up that way. The
// file's name starts with a dot, so the grouper never takes it for an image.
func writableDir(p string) error {
	if err := readableDir(p); err != nil {
		return err
	}
	f, err := os.CreateTemp(p, ".gcingest-check-*")
	if err != nil {
		// The probe's random name would make each message another.
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("create a file in %s: %w", p, err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("remove probe file %s: %w", name, err)
	}
	return nil
}
