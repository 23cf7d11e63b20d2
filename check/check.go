// Package check says, changing nothing, what run would do with a config
// and what it would refuse: `gcingest check` (the config, the token, the
// archives and interfaces on the server, the folders, and every folder item
// ready now against run's own rules) and `gcingest plan` (how each drop
// folder would be grouped, what is ready, what waits and why).
package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/gcingest/gcingest/agent"
	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/dicom"
	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/ingest"
	"github.com/gcingest/gcingest/printable"
	"github.com/gcingest/gcingest/status"
	"github.com/gcingest/gcingest/watch"
)

// Options configure Run.
type Options struct {
	Config *config.Config
	// Getenv reads the environment, for the token.
	Getenv func(string) string
	// Out gets one line per check: "ok", "WARN" or "FAIL".
	Out io.Writer
	// Logger builds the logger once the token is known, so that the
	// logger can scrub it.
	Logger func(token string) *slog.Logger
	// Version names this binary in the User-Agent.
	Version string
}

// ErrTokenRefused is returned (wrapped) when the server refused the token:
// the checks stop there, since every other answer would be a refusal too.
var ErrTokenRefused = errors.New("authentication failed")

// Run checks opts.Config, then the server and the folders, and writes one
// line per check to opts.Out. It creates nothing on the server. It returns
// nil when every check passed; a *agent.ConfigError when there is no
// token; an error wrapping ErrTokenRefused when the server refused it; else
// an error saying how many checks failed.
func Run(ctx context.Context, opts Options) error {
	cfg := opts.Config
	k := &checker{w: opts.Out}
	k.ok("config %s (%s)", cfg.Path, plural(len(cfg.Watch), "watch", "watches"))
	for _, w := range cfg.Warnings() {
		k.warn("%s", w)
	}
	checkStatusPort(ctx, k, cfg.Status.Listen)
	tok, src, err := cfg.Token(opts.Getenv)
	if err != nil {
		k.fail("token: %v", err)
		return &agent.ConfigError{Err: err}
	}
	k.ok("token from %s", src)
	log := opts.Logger(tok)
	// Few quick retries: check answers a person waiting at a terminal.
	cl, err := agent.NewClient(cfg, tok, opts.Version, log, gcapi.WithRetry(gcapi.RetryPolicy{MaxAttempts: 3, MaxDelay: 2 * time.Second}))
	if err != nil {
		k.fail("grand_challenge.url: %v", err)
		return err
	}
	sc := &serverChecks{cl: cl, url: cfg.GrandChallenge.URL, archives: map[string]error{},
		ifaces: map[string]*gcapi.Interface{}, ifaceErr: map[string]error{}}
	fc := ingest.NewFolderChecker(cl, log)
	iws := agent.Watches(cfg)
	for i, w := range cfg.Watch {
		if err := sc.check(ctx, k, i, w); err != nil {
			return err
		}
		checkFolders(k, i, w, writableDir)
		checkFolderItems(ctx, k, fc, i, iws[i], log.With("watch", w.Path))
	}
	if err := agent.CheckResolvedFolders(cfg); err != nil {
		k.fail("%v", err)
	}
	if k.fails > 0 {
		return fmt.Errorf("check: %d of the checks above failed", k.fails)
	}
	fmt.Fprintln(opts.Out, "all checks passed")
	return nil
}

// checker prints one line per check and counts failures. A check's text
// quotes folder item names and file names from the drop folders, and the
// server's words: each line is escaped whole (printable.String), so that
// it stays one line and nothing in it acts on the terminal.
type checker struct {
	w     io.Writer
	fails int
}

func (k *checker) ok(format string, a ...any) { k.line("ok    ", format, a) }
func (k *checker) warn(format string, a ...any) {
	k.line("WARN  ", format, a)
}
func (k *checker) fail(format string, a ...any) {
	k.fails++
	k.line("FAIL  ", format, a)
}

func (k *checker) line(mark, format string, a []any) {
	fmt.Fprintf(k.w, "%s%s\n", mark, printable.String(fmt.Sprintf(format, a...)))
}

// serverChecks checks archives and interfaces, each slug once.
type serverChecks struct {
	cl       *gcapi.Client
	url      string
	archives map[string]error
	ifaces   map[string]*gcapi.Interface
	ifaceErr map[string]error
}

func (sc *serverChecks) iface(ctx context.Context, slug string) (*gcapi.Interface, error) {
	if _, seen := sc.ifaces[slug]; !seen {
		sc.ifaces[slug], sc.ifaceErr[slug] = sc.cl.InterfaceBySlug(ctx, slug)
	}
	return sc.ifaces[slug], sc.ifaceErr[slug]
}

// check checks watch i's archive and interfaces. It returns an error only
// when going on makes no sense: the server refused the token.
func (sc *serverChecks) check(ctx context.Context, k *checker, i int, w watch.Spec) error {
	key := fmt.Sprintf("watch[%d]", i)
	if err, seen := sc.archives[w.Archive]; seen {
		if err == nil {
			k.ok("%s.archive %q: as above", key, w.Archive)
		}
	} else {
		a, err := sc.cl.ArchiveBySlug(ctx, w.Archive)
		sc.archives[w.Archive] = err
		switch {
		case errors.Is(err, gcapi.ErrUnauthorized):
			k.fail("token: the server at %s refused it", sc.url)
			return fmt.Errorf("token refused by %s: %w", sc.url, ErrTokenRefused)
		case gcapi.IsNotFound(err):
			k.fail("%s.archive %q: not found; check the slug (the last part of the archive's URL) and that this account is an editor or uploader of it (with a wrong token every archive looks missing)", key, w.Archive)
		case err != nil:
			k.fail("%s.archive %q: %v", key, w.Archive, err)
		default:
			sc.checkUpload(ctx, k, key, w.Archive, a)
		}
	}
	it, err := sc.iface(ctx, w.Interface)
	switch {
	case err != nil:
		k.fail("%s.interface %q: %s", key, w.Interface, ifaceProblem(err))
	case it.Kind == ingest.KindDICOMImageSet:
		checkDICOMSet(k, key, w)
	case it.SuperKind != gcapi.SuperKindImage:
		k.fail("%s.interface %q: is a %q interface (%s); images need an image interface such as \"generic-medical-image\"", key, w.Interface, it.Kind, it.SuperKind)
	default:
		k.ok("%s.interface %q: %s", key, w.Interface, it.Kind)
	}
	pats := make([]string, 0, len(w.Values))
	for p := range w.Values {
		pats = append(pats, p)
	}
	sort.Strings(pats)
	for _, p := range pats {
		slug := w.Values[p]
		it, err := sc.iface(ctx, slug)
		wantImage := isImagePattern(p)
		switch {
		case err != nil:
			k.fail("%s.values %q = %q: %s", key, p, slug, ifaceProblem(err))
		case wantImage && it.SuperKind != gcapi.SuperKindImage:
			k.fail("%s.values %q = %q: image files need an image interface, this one is %q (%s)", key, p, slug, it.Kind, it.SuperKind)
		case !wantImage && it.SuperKind == gcapi.SuperKindImage:
			k.fail("%s.values %q = %q: is an image interface, but %q matches files that are not images; use a file or value interface", key, p, slug, p)
		default:
			k.ok("%s.values %q = %q: %s", key, p, slug, it.Kind)
		}
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func ifaceProblem(err error) string {
	if gcapi.IsNotFound(err) {
		return "no such interface; the slugs are listed at https://grand-challenge.org/components/interfaces/"
	}
	return err.Error()
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

// checkFolders checks the drop folder and where files are moved; writable
// proves a folder writable (writableDir).
func checkFolders(k *checker, i int, w watch.Spec, writable func(string) error) {
	key := fmt.Sprintf("watch[%d]", i)
	switch err := readableDir(w.Path); {
	case err != nil:
		k.fail("%s.path: %v", key, err)
	case writable(w.Path) == nil:
		k.ok("%s.path %s: readable and writable", key, w.Path)
	case w.AfterUpload == watch.AfterUploadMove || w.AfterUpload == watch.AfterUploadDelete || w.FailedDir != "":
		// run would fail every move or delete, again and again.
		k.fail("%s.path %s: not writable by this user, so files cannot be moved or deleted from it (after_upload = %q%s); "+
			"give the user gcingest runs as write permission on the folder, or use after_upload = \"keep\" and no failed_dir",
			key, w.Path, w.AfterUpload, map[bool]string{true: ", failed_dir set"}[w.FailedDir != ""])
	default:
		k.warn("%s.path %s: readable, but not writable by this user: the agent cannot keep its lock file .gcingest.lock there, "+
			"so a second agent on this folder would go unnoticed (each item is read again before attaching values instead)", key, w.Path)
	}
	dirs := []struct{ name, path string }{}
	if w.AfterUpload == watch.AfterUploadMove {
		dirs = append(dirs, struct{ name, path string }{"done_dir", w.DoneDir})
	}
	if w.FailedDir != "" {
		dirs = append(dirs, struct{ name, path string }{"failed_dir", w.FailedDir})
	}
	for _, d := range dirs {
		if err := writable(d.path); err != nil {
			k.fail("%s.%s: %v", key, d.name, err)
			continue
		}
		same, err := SameFileSystem(w.Path, d.path)
		switch {
		case err != nil:
			k.fail("%s.%s %s: %v", key, d.name, d.path, err)
		case !same:
			// run copies across file systems (written, synced, then the
			// source removed): it works, so check says what it costs
			// rather than failing what run does.
			k.warn("%s.%s %s: not on the same file system as %s; files are moved by copying each (written, synced, then removed from the drop folder), "+
				"slower than a rename: a folder on the same disk or share makes each move one rename", key, d.name, d.path, w.Path)
		default:
			k.ok("%s.%s %s: writable, same file system", key, d.name, d.path)
		}
	}
}

func readableDir(p string) error {
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s does not exist; create it or fix the path", p)
		}
		return fmt.Errorf("%s cannot be opened: %w", p, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", p, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a folder", p)
	}
	if _, err := f.Readdirnames(1); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s cannot be listed: %w (does the gcingest user have read permission?)", p, err)
	}
	return nil
}

// writableDir proves a folder writable by creating and removing a file in
// it: permission bits, ACLs and read-only mounts all show up that way.
func writableDir(p string) error {
	if err := readableDir(p); err != nil {
		return err
	}
	f, err := os.CreateTemp(p, ".gcingest-check-*")
	if err != nil {
		return fmt.Errorf("%s is not writable: %w", p, err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("remove test file %s: %w", path.Base(name), err)
	}
	return nil
}

// checkDICOMSet reports on a watch whose socket is of kind DICOM Image
// Set: only DICOM series go there, always de-identified with Grand
// Challenge's procedure, which accepts only the SOP classes it has rules
// for.
func checkDICOMSet(k *checker, key string, w watch.Spec) {
	p, err := dicom.DefaultProcedure()
	if err != nil {
		k.fail("%s.interface %q: DICOM Image Set: the embedded de-identification procedure does not load: %v", key, w.Interface, err)
		return
	}
	if w.Group == watch.GroupFolder {
		k.fail("%s.interface %q: DICOM Image Set sockets are not supported in folder mode; use group = \"auto\"", key, w.Interface)
		return
	}
	if err := ingest.DeidTitleProblem(w.Title); err != nil {
		k.fail("%s.title: %v (the interface %q is a DICOM Image Set, always de-identified); use \"{hash}\" and fixed text, or leave title unset", key, err, w.Interface)
		return
	}
	var classes []string
	for _, c := range p.SOPClasses() {
		if n := sopClassName[c]; n != "" {
			c += " (" + n + ")"
		}
		classes = append(classes, c)
	}
	k.ok("%s.interface %q: DICOM Image Set: DICOM series only, each de-identified here with Grand Challenge's procedure %s, "+
		"which accepts SOP classes %s; other files dropped there fail", key, w.Interface, p.Version, strings.Join(classes, ", "))
}

// sopClassName names the SOP classes the procedure may list.
var sopClassName = map[string]string{
	"1.2.840.10008.5.1.4.1.1.2":   "CT Image Storage",
	"1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
	"1.2.840.10008.5.1.4.1.1.4":   "MR Image Storage",
	"1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
}

// checkUpload proves the account may add items to the archive, without
// creating one (gcapi.Client.CanUpload): an account that can only view the
// archive passes every other check and then fails every image with
// "archive: Invalid hyperlink - Object does not exist.".
func (sc *serverChecks) checkUpload(ctx context.Context, k *checker, key, slug string, a *gcapi.Archive) {
	ok, err := sc.cl.CanUpload(ctx, a.APIURL)
	switch {
	case err != nil:
		sc.archives[slug] = err
		k.fail("%s.archive %q: could not check upload rights: %v", key, slug, err)
	case !ok:
		sc.archives[slug] = errNoUpload
		k.fail("%s.archive %q: %q is visible to this account, but it may not add items to it; ask an editor of the archive to add the account as an uploader", key, slug, a.Title)
	default:
		k.ok("%s.archive %q: %q, this account may upload", key, slug, a.Title)
	}
}

var errNoUpload = errors.New("no upload rights")

// checkStatusPort fails when run could not open its status listener: a
// port in use makes run exit with code 2. A port held by a running gcingest
// that answers there is this configuration's own agent: re-checking a live
// service's config must not fail for it.
func checkStatusPort(ctx context.Context, k *checker, listen string) {
	if listen == "" {
		return
	}
	ln, err := status.Listen(listen)
	if err == nil {
		ln.Close()
		k.ok("status.listen %s: free", listen)
		return
	}
	// A report of no image (ID 0 is never given) costs the agent one
	// index read, whatever its backlog; a program that does not answer
	// does not hold check up for long.
	fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if rep, ferr := status.Fetch(fctx, listen, status.Query{ID: "0"}); ferr == nil {
		k.ok("status.listen %s: held by the running gcingest %s: ok", listen, rep.Version)
		return
	}
	k.fail("status.listen: %v", err)
}
