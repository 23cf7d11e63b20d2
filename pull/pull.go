// Package pull downloads the items of a Grand Challenge archive into a
// folder: DIR/<item>/<socket slug>.<ext> for image and file values,
// DIR/<item>/<socket slug>/<SOPInstanceUID>.dcm for the instances of a
// DICOM image set, and DIR/<item>/values.json for JSON values. It is
// parallel and resumable: a file is downloaded to "<name>.part", synced and
// renamed, so a final name only ever holds a complete file (and a set's
// folder only a whole set, see dicom.go), and a second pull skips what is
// already there.
package pull

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gcingest/gcingest/bytesize"
	"github.com/gcingest/gcingest/gcapi"
)

// Client is the part of *gcapi.Client that Pull uses.
type Client interface {
	ArchiveBySlug(ctx context.Context, slug string) (*gcapi.Archive, error)
	InterfaceBySlug(ctx context.Context, slug string) (*gcapi.Interface, error)
	ArchiveItems(ctx context.Context, archivePK string) ([]gcapi.ArchiveItem, error)
	Images(ctx context.Context, f gcapi.ImageFilter) ([]gcapi.Image, error)
	Image(ctx context.Context, pkOrURL string) (*gcapi.Image, error)
	Download(ctx context.Context, fileURL string, w io.Writer) (int64, error)
	DICOMInstances(ctx context.Context, imagePK string) (*gcapi.DICOMInstances, error)
	DownloadSigned(ctx context.Context, req gcapi.SignedRequest, w io.Writer) (int64, error)
}

var _ Client = (*gcapi.Client)(nil)

// Options say what to pull and where.
type Options struct {
	Archive     string    // archive slug
	Out         string    // output folder; created if missing
	Interfaces  []string  // only values of these socket slugs; empty means all
	Concurrency int       // parallel downloads; 0 means DefaultConcurrency
	Progress    io.Writer // progress output: a redrawn bar on a terminal, plain lines otherwise; nil for none

	// Verify re-hashes files that are already complete and downloads them
	// again when the SHA-256 differs from the one recorded when they were
	// downloaded. Without it a complete file is trusted by its size.
	Verify bool
	// Attempts is how often one file is tried before it counts as failed
	// (transient errors only); 0 means DefaultAttempts.
	Attempts int
}

// Defaults of Options.
const (
	DefaultConcurrency = 4
	DefaultAttempts    = 4
)

// Result counts what a pull did.
type Result struct {
	Items      int   // items in the archive
	Files      int   // image and file downloads planned (downloaded + skipped + failed)
	Downloaded int   // files downloaded in this run
	Skipped    int   // files already complete on disk
	Failed     int   // files that could not be downloaded
	Values     int   // JSON values written to values.json files
	Bytes      int64 // bytes downloaded in this run
}

// String is the one-line summary of a pull, with the byte count in binary
// units ("329 B", "1.2 KiB", "3.4 MiB").
func (r Result) String() string {
	return fmt.Sprintf("%d items: %d files downloaded (%s), %d already complete, %d failed; %d JSON values",
		r.Items, r.Downloaded, bytesize.Format(r.Bytes), r.Skipped, r.Failed, r.Values)
}

// Names of the files Pull keeps in every item folder.
const (
	valuesFile   = "values.json"
	manifestFile = ".gcingest-pull.json"
	partSuffix   = ".part"
)

// Directory and file permissions: archives hold medical data, so nothing
// is world-readable.
const (
	dirPerm  = 0o750
	filePerm = 0o640
)

// imageListThreshold is the number of image values from which listing all
// images of the archive (a few paged requests) beats one GET per image.
const imageListThreshold = 20

// maxReportedErrors caps the file errors joined into Pull's error.
const maxReportedErrors = 10

// Pull downloads the archive opts.Archive into opts.Out. Files that fail are
// counted in Result.Failed and reported together in the returned error once
// every other file had its chance; a cancelled ctx stops at once.
func Pull(ctx context.Context, c Client, opts Options, log *slog.Logger) (Result, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Archive == "" {
		return Result{}, errors.New("pull: no archive slug given")
	}
	if opts.Out == "" {
		return Result{}, errors.New("pull: no output folder given")
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.Attempts <= 0 {
		opts.Attempts = DefaultAttempts
	}
	log = log.With("archive", opts.Archive)

	arch, err := c.ArchiveBySlug(ctx, opts.Archive)
	if err != nil {
		return Result{}, fmt.Errorf("pull: %w", err) // the client names the slug
	}
	filter, err := checkInterfaces(ctx, c, opts.Interfaces)
	if err != nil {
		return Result{}, err
	}
	items, err := c.ArchiveItems(ctx, arch.PK)
	if err != nil {
		return Result{}, fmt.Errorf("pull: list items of archive %q: %w", opts.Archive, err)
	}
	images, imgErrs, err := resolveImages(ctx, c, arch.PK, items, filter, opts.Concurrency)
	if err != nil {
		return Result{}, err
	}
	sets, err := resolveSets(ctx, c, images, opts.Concurrency)
	if err != nil {
		return Result{}, err
	}

	out, err := filepath.Abs(opts.Out)
	if err != nil {
		return Result{}, fmt.Errorf("pull: output folder %s: %w", opts.Out, err)
	}
	if err := mkdirAll(out); err != nil {
		return Result{}, fmt.Errorf("pull: create output folder %s: %w", out, err)
	}
	// Every file operation goes through root, so no name, symlink or race
	// can make Pull write outside the output folder.
	root, err := openRoot(out)
	if err != nil {
		return Result{}, fmt.Errorf("pull: open output folder %s: %w", out, err)
	}
	defer root.Close()

	p := &puller{
		c:      c,
		root:   root,
		opts:   opts,
		log:    log,
		filter: filter,
	}
	plans := planItems(items, images, sets, imgErrs, filter)
	res := Result{Items: len(items)}
	var jobs []*fileJob
	var errs []error
	for _, ip := range plans {
		res.Files += len(ip.jobs) + len(ip.errs)
		res.Failed += len(ip.errs)
		errs = append(errs, ip.errs...)
		n, err := p.prepareItem(ip)
		if err != nil {
			// Without its folder nothing of the item can be written.
			errs = append(errs, err)
			res.Failed += len(ip.jobs)
			continue
		}
		res.Values += n
		jobs = append(jobs, ip.jobs...)
	}
	log.Info("pulling archive", "out", out, "items", len(items), "files", len(jobs))

	prog := newProgress(opts.Progress, len(jobs))
	prog.start()
	runErrs := p.run(ctx, jobs, prog, &res)
	prog.stop(ctx.Err() == nil)
	errs = append(errs, runErrs...)

	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("pull archive %q: %w", opts.Archive, err)
	}
	log.Info("pulled archive", "downloaded", res.Downloaded, "skipped", res.Skipped,
		"failed", res.Failed, "bytes", res.Bytes, "values", res.Values)
	if len(errs) > 0 {
		return res, joinCapped(fmt.Sprintf("pull archive %q: %d errors, %d of %d files failed", opts.Archive, len(errs), res.Failed, res.Files), errs)
	}
	return res, nil
}

// checkInterfaces makes sure every slug of the filter names a socket, so a
// typo fails before anything is written; nil means no filter.
func checkInterfaces(ctx context.Context, c Client, slugs []string) (map[string]bool, error) {
	if len(slugs) == 0 {
		return nil, nil
	}
	filter := make(map[string]bool, len(slugs))
	for _, s := range slugs {
		if filter[s] {
			continue
		}
		if _, err := c.InterfaceBySlug(ctx, s); err != nil {
			return nil, fmt.Errorf("pull: interface %q: %w", s, err)
		}
		filter[s] = true
	}
	return filter, nil
}

// wanted reports whether a value of that socket is to be pulled.
func wanted(filter map[string]bool, slug string) bool {
	return filter == nil || filter[slug]
}

// resolveImages fetches the image records (with their file URLs) of every
// image value to pull, keyed by image pk. An image that cannot be fetched is
// reported in the second map, to fail its value rather than the whole pull.
func resolveImages(ctx context.Context, c Client, archivePK string, items []gcapi.ArchiveItem, filter map[string]bool, conc int) (map[string]*gcapi.Image, map[string]error, error) {
	need := map[string]string{} // image pk -> URL as the item gave it
	for _, it := range items {
		for _, v := range it.Values {
			if v.File == nil && v.Image != nil && wanted(filter, v.Interface.Slug) {
				need[imagePK(*v.Image)] = *v.Image
			}
		}
	}
	got := make(map[string]*gcapi.Image, len(need))
	failed := map[string]error{}
	if len(need) >= imageListThreshold {
		list, err := c.Images(ctx, gcapi.ImageFilter{Archive: archivePK})
		if err != nil {
			return nil, nil, fmt.Errorf("pull: list images of archive %s: %w", archivePK, err)
		}
		for i := range list {
			if _, ok := need[list[i].PK]; ok {
				got[list[i].PK] = &list[i]
			}
		}
	}
	var missing []string
	for pk := range need {
		if got[pk] == nil {
			missing = append(missing, pk)
		}
	}
	sort.Strings(missing)

	var mu sync.Mutex
	eachBounded(ctx, conc, missing, func(pk string) {
		img, err := c.Image(ctx, need[pk])
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed[pk] = err
			return
		}
		got[pk] = img
	})
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("pull: get images: %w", err)
	}
	return got, failed, nil
}

// eachBounded calls fn for each key, at most n at once, until ctx is
// done, and returns when every call has.
func eachBounded(ctx context.Context, n int, keys []string, fn func(key string)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, n)
	for _, k := range keys {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn(k)
		}()
	}
	wg.Wait()
}

// imagePK is the last path element of an image API URL (or the pk itself).
func imagePK(u string) string {
	p := u
	if pu, err := url.Parse(u); err == nil {
		p = pu.Path
	}
	return path.Base(strings.TrimRight(p, "/"))
}

// itemPlan is what Pull does for one item.
type itemPlan struct {
	pk, title string
	folder    string
	values    map[string]jsonValue // socket slug -> JSON value
	jobs      []*fileJob
	errs      []error // values that cannot be pulled, found while planning
	state     *itemState
}

// jsonValue is a JSON value as the server sent it ("null" when absent).
type jsonValue = []byte

// fileJob is one file to download.
type fileJob struct {
	item   *itemState
	iface  string
	url    string
	name   string // final name inside the item folder
	source string // what the file was downloaded from, as the manifest records it

	// For an instance of a DICOM image set: the set, and the instance's
	// SOP Instance UID. name is then inside the set's staging folder.
	set     *setState
	sop     string
	refused int // the generation of the list whose request the storage refused; -1 for none
}

// rel is the job's path relative to the output folder, for messages.
func (j *fileJob) rel() string { return path.Join(j.item.folder, j.name) }

// shown is the job's path as progress reports it: where the file ends up,
// which for an instance of a DICOM image set is the set's final folder,
// not the staging folder it is downloaded into.
func (j *fileJob) shown() string {
	if j.set != nil {
		return path.Join(j.item.folder, j.set.folder, path.Base(j.name))
	}
	return j.rel()
}

// where names the job for error messages: item, interface and URL (or
// image and instance).
func (j *fileJob) where() string {
	if j.set != nil {
		return fmt.Sprintf("item %q (%s) interface %s: image %s instance %s", j.item.title, j.item.pk, j.iface, j.set.src.imagePK, j.sop)
	}
	return fmt.Sprintf("item %q (%s) interface %s: %s", j.item.title, j.item.pk, j.iface, redactURL(j.url))
}

// planItems decides every item's folder and every file's name. It does no
// I/O, so the layout can be tested on its own.
func planItems(items []gcapi.ArchiveItem, images map[string]*gcapi.Image, sets map[string]*setSource, imgErrs map[string]error, filter map[string]bool) []*itemPlan {
	refs := make([]itemRef, len(items))
	for i, it := range items {
		refs[i] = itemRef{PK: it.PK, Title: it.Title}
	}
	folders := itemFolders(refs)

	plans := make([]*itemPlan, 0, len(items))
	for _, it := range items {
		st := &itemState{pk: it.PK, title: it.Title, folder: folders[it.PK]}
		ip := &itemPlan{pk: it.PK, title: it.Title, folder: st.folder, values: map[string]jsonValue{}, state: st}
		used := map[string]bool{fold(valuesFile): true, fold(manifestFile): true}
		claim := func(name, fallback string) string {
			if used[fold(name)] || used[fold(name+partSuffix)] {
				name = fallback
			}
			for n := 2; used[fold(name)] || used[fold(name+partSuffix)]; n++ {
				name = fallback + "-" + fmt.Sprint(n)
			}
			used[fold(name)] = true
			used[fold(name+partSuffix)] = true
			return name
		}
		vals := append([]gcapi.ItemValue(nil), it.Values...)
		sort.Slice(vals, func(i, j int) bool { return vals[i].Interface.Slug < vals[j].Interface.Slug })
		for _, v := range vals {
			slug := v.Interface.Slug
			if !wanted(filter, slug) {
				continue
			}
			sname := Sanitize(slug)
			if sname == "" {
				sname = "value-" + fmt.Sprint(v.PK)
			}
			where := fmt.Sprintf("item %q (%s) interface %s", it.Title, it.PK, slug)
			switch {
			case v.File != nil:
				// File values, and JSON values the server stores as files.
				ext := fileExt(*v.File)
				name := claim(sname+ext, fmt.Sprintf("%s-%d%s", sname, v.PK, ext))
				ip.jobs = append(ip.jobs, &fileJob{item: st, iface: slug, url: *v.File, name: name, source: urlIdentity(*v.File)})
			case v.Image != nil:
				ipk := imagePK(*v.Image)
				img := images[ipk]
				if img == nil {
					err := imgErrs[ipk]
					if err == nil {
						err = errors.New("not found")
					}
					ip.errs = append(ip.errs, fmt.Errorf("%s: get image %s: %w", where, redactURL(*v.Image), err))
					continue
				}
				if img.DICOMImageSet != nil {
					// A folder of instances, named like a file value would be.
					folder := claim(sname, fmt.Sprintf("%s-%d", sname, v.PK))
					jobs, err := planSet(st, slug, folder, sets[img.PK])
					if err != nil {
						ip.errs = append(ip.errs, fmt.Errorf("%s: image %s: %w", where, img.PK, err))
						continue
					}
					ip.jobs = append(ip.jobs, jobs...)
					continue
				}
				files := imageFiles(img)
				if len(files) == 0 {
					ip.errs = append(ip.errs, fmt.Errorf("%s: image %s has no downloadable file (only DZI or none)", where, img.PK))
					continue
				}
				for i, f := range files {
					ext := fileExt(f.File)
					var name string
					if i == 0 {
						name = claim(sname+ext, fmt.Sprintf("%s-%d%s", sname, v.PK, ext))
					} else {
						// Companion files (the .raw/.zraw of a legacy .mhd)
						// keep their stored names: the header refers to them.
						stored := Sanitize(urlBase(f.File))
						if stored == "" {
							stored = fmt.Sprintf("%s-%d%s", sname, i+1, ext)
						}
						name = claim(stored, fmt.Sprintf("%s-%d%s", sname, i+1, ext))
					}
					ip.jobs = append(ip.jobs, &fileJob{item: st, iface: slug, url: f.File, name: name, source: urlIdentity(f.File)})
				}
			default:
				val := []byte(v.Value)
				if len(val) == 0 {
					val = []byte("null")
				}
				ip.values[slug] = val
			}
		}
		plans = append(plans, ip)
	}
	return plans
}

// imageFiles returns the files of an image worth downloading, the main one
// first: everything but DZI pyramids (derived from the TIFF), with the .mha,
// .mhd or TIFF file leading.
func imageFiles(img *gcapi.Image) []gcapi.ImageFile {
	var fs []gcapi.ImageFile
	for _, f := range img.Files {
		if f.ImageType != gcapi.ImageTypeDZI && f.File != "" {
			fs = append(fs, f)
		}
	}
	rank := func(f gcapi.ImageFile) int {
		switch fileExt(f.File) {
		case ".mha":
			return 0
		case ".mhd":
			return 1
		}
		if f.ImageType == gcapi.ImageTypeTIFF {
			return 2
		}
		return 3
	}
	sort.SliceStable(fs, func(i, j int) bool {
		if ri, rj := rank(fs[i]), rank(fs[j]); ri != rj {
			return ri < rj
		}
		return fs[i].File < fs[j].File
	})
	return fs
}

// joinCapped joins errs under a headline, listing at most maxReportedErrors.
func joinCapped(head string, errs []error) error {
	shown := errs
	if len(shown) > maxReportedErrors {
		shown = shown[:maxReportedErrors]
	}
	all := append([]error{errors.New(head)}, shown...)
	if n := len(errs) - len(shown); n > 0 {
		all = append(all, fmt.Errorf("and %d more", n))
	}
	return errors.Join(all...)
}

// puller holds what the download workers share.
type puller struct {
	c      Client
	root   *root
	opts   Options
	log    *slog.Logger
	filter map[string]bool
}

// run downloads the jobs with a bounded pool of workers and returns the
// errors of files that failed.
func (p *puller) run(ctx context.Context, jobs []*fileJob, prog *progress, res *Result) []error {
	var (
		mu         sync.Mutex
		errs       []error
		downloaded atomic.Int64
		skipped    atomic.Int64
		failed     atomic.Int64
		bytes      atomic.Int64
	)
	ch := make(chan *fileJob)
	var wg sync.WaitGroup
	for range min(p.opts.Concurrency, max(len(jobs), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				if ctx.Err() != nil {
					continue // drain without starting anything new
				}
				skip, n, err := p.fetch(ctx, j, prog)
				if j.set != nil && ctx.Err() == nil {
					// The set's folder takes its final name once its
					// last instance is in.
					if perr := p.finishInstance(j, err == nil); perr != nil {
						mu.Lock()
						errs = append(errs, perr)
						mu.Unlock()
					}
				}
				switch {
				case err != nil:
					if ctx.Err() != nil {
						continue // cancelled: not the file's fault
					}
					failed.Add(1)
					prog.failed(j.shown(), err)
					p.log.Warn("download failed", "item", j.item.pk, "interface", j.iface,
						"url", redactURL(j.url), "err", err)
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				case skip:
					skipped.Add(1)
					prog.skipped()
				default:
					downloaded.Add(1)
					bytes.Add(n)
					prog.downloaded(j.shown(), n)
				}
			}
		}()
	}
feed:
	for _, j := range jobs {
		if ctx.Err() != nil {
			break // select would pick at random between a ready send and Done
		}
		select {
		case ch <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
	res.Downloaded += int(downloaded.Load())
	res.Skipped += int(skipped.Load())
	res.Failed += int(failed.Load())
	res.Bytes += bytes.Load()
	return errs
}

// fetch makes one job's final file complete: it skips a file already
// complete, and otherwise downloads to "<name>.part", syncs and renames it,
// retrying transient failures. The file is synced before the rename so that
// a crash cannot leave a final name over missing data; the folder is not
// synced, since a lost rename only costs a download on the next pull.
func (p *puller) fetch(ctx context.Context, j *fileJob, prog *progress) (skipped bool, n int64, err error) {
	final := j.rel()
	part := final + partSuffix
	if j.set != nil {
		done, err := p.prepareSet(j.set)
		if err != nil {
			return false, 0, fmt.Errorf("%s: %w", j.where(), err)
		}
		if done {
			return true, 0, nil
		}
	}
	if ok, err := p.complete(j); err != nil {
		return false, 0, fmt.Errorf("%s: check %s: %w", j.where(), final, err)
	} else if ok {
		// A .part left beside a complete file is from an older run.
		if err := p.root.Remove(part); err != nil && !isNotExist(err) {
			p.log.Warn("remove stale partial download", "file", part, "err", err)
		}
		return true, 0, nil
	}

	delay := retryBase
	for attempt := 1; ; attempt++ {
		var sum string
		n, sum, err = p.downloadOnce(ctx, j, part, prog)
		if err == nil {
			if err := p.root.Rename(part, final); err != nil {
				_ = p.root.Remove(part)
				return false, 0, fmt.Errorf("%s: rename %s to %s: %w", j.where(), part, final, err)
			}
			if err := p.record(j, n, sum); err != nil {
				return false, 0, fmt.Errorf("%s: %w", j.where(), err)
			}
			p.log.Debug("downloaded", "file", final, "bytes", n)
			return false, n, nil
		}
		// Never leave a partial file behind, not even under .part: the next
		// attempt or run starts it again from the first byte.
		_ = p.root.Remove(part)
		if ctx.Err() != nil {
			return false, 0, fmt.Errorf("%s: download: %w", j.where(), ctx.Err())
		}
		if attempt >= p.opts.Attempts || !retryable(err) {
			return false, 0, fmt.Errorf("%s: download to %s (attempt %d): %w", j.where(), final, attempt, err)
		}
		p.log.Info("retrying download", "file", final, "attempt", attempt, "wait", delay, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false, 0, fmt.Errorf("%s: download: %w", j.where(), ctx.Err())
		}
		delay = min(delay*2, retryMax)
	}
}

// Backoff between attempts at one file.
const (
	retryBase = 200 * time.Millisecond
	retryMax  = 5 * time.Second
)

// retryable reports whether another attempt at a download may succeed. The
// client already retries a download that failed before its first byte; what
// is left here is mostly a connection lost halfway, which the client cannot
// repeat because the bytes already went to the file.
func retryable(err error) bool {
	var le *localError
	if errors.As(err, &le) {
		return false
	}
	if errors.Is(err, errSignatureRefused) {
		return true // the next attempt asks for new signatures
	}
	return gcapi.IsTransient(err)
}
