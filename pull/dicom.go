package pull

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gcingest/gcingest/gcapi"
)

// DICOM image sets. A "DICOM Image Set" value is an image without files:
// its instances live in AWS HealthImaging, and the server hands out a
// signed request per instance (GET /api/v1/cases/images/{pk}/dicom/instances/).
// Pull writes them as DIR/<item>/<socket slug>/<SOPInstanceUID>.dcm, one
// folder per image. The folder only ever holds a whole set: instances are
// downloaded into "<slug>.part/" and the folder is renamed to "<slug>" once
// every instance is in, so an interrupted or failed set is never mistaken
// for a complete series. The next pull resumes the staging folder.

// errSignatureRefused marks a download the storage refused with a 403: the
// signatures the server handed out expired while the pull ran. The next
// attempt asks the server for new ones.
var errSignatureRefused = errors.New("the storage refused the signed request")

// setRefreshAfter is how old a set's signed requests may get before Pull
// asks for new ones instead of sending them. The server signs them with
// AWS SigV4, which AWS accepts for 15 minutes [external: AWS SigV4
// documentation]; the margin covers a slow download and clock skew.
const setRefreshAfter = 4 * time.Minute

// setSource hands out signed requests for the instances of one image,
// asking the server again when they are old or were refused.
type setSource struct {
	c       Client
	imagePK string
	setID   string
	err     error // the instances could not be listed

	mu      sync.Mutex
	gen     int // counts the lists fetched, so that one refusal refreshes once
	fetched time.Time
	reqs    map[string]gcapi.SignedRequest // by SOP Instance UID
	order   []string                       // unique SOP Instance UIDs, as the server listed them
}

// load takes a fresh list. The server lists an instance once per frame
// (grand-challenge.org app/grandchallenge/cases/models.py
// DICOMImageSet.instance_requests), so repeats are dropped.
func (s *setSource) load(ans *gcapi.DICOMInstances, now time.Time) {
	s.reqs = make(map[string]gcapi.SignedRequest, len(ans.Instances))
	s.order = s.order[:0]
	for _, in := range ans.Instances {
		if _, ok := s.reqs[in.SOPInstanceUID]; ok {
			continue
		}
		s.reqs[in.SOPInstanceUID] = in.GetInstance
		s.order = append(s.order, in.SOPInstanceUID)
	}
	s.fetched = now
	s.gen++
}

// request returns the signed request for an instance and the generation of
// the list it came from. The list is fetched again when it is older than
// setRefreshAfter, or when refused is the generation whose request the
// storage refused (and no other worker fetched a newer list meanwhile).
func (s *setSource) request(ctx context.Context, sop string, refused int) (gcapi.SignedRequest, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if refused == s.gen || time.Since(s.fetched) > setRefreshAfter {
		ans, err := s.c.DICOMInstances(ctx, s.imagePK)
		if err != nil {
			return gcapi.SignedRequest{}, 0, fmt.Errorf("list DICOM instances of image %s again: %w", s.imagePK, err)
		}
		if ans.ImageSetID != s.setID {
			return gcapi.SignedRequest{}, 0, fmt.Errorf("image %s now holds DICOM image set %s, not %s", s.imagePK, ans.ImageSetID, s.setID)
		}
		s.load(ans, time.Now())
	}
	r, ok := s.reqs[sop]
	if !ok {
		return gcapi.SignedRequest{}, 0, fmt.Errorf("image %s no longer lists DICOM instance %s", s.imagePK, sop)
	}
	return r, s.gen, nil
}

// resolveSets lists the instances of every DICOM image set among images,
// keyed by image pk. A set whose list cannot be fetched carries the error,
// to fail its value rather than the whole pull.
func resolveSets(ctx context.Context, c Client, images map[string]*gcapi.Image, conc int) (map[string]*setSource, error) {
	var pks []string
	for pk, img := range images {
		if img.DICOMImageSet != nil {
			pks = append(pks, pk)
		}
	}
	sort.Strings(pks)
	out := make(map[string]*setSource, len(pks))
	var mu sync.Mutex
	eachBounded(ctx, conc, pks, func(pk string) {
		src := &setSource{c: c, imagePK: pk, setID: images[pk].DICOMImageSet.ImageSetID}
		ans, err := c.DICOMInstances(ctx, pk)
		switch {
		case err != nil:
			src.err = err
		case ans.ImageSetID != src.setID:
			src.err = fmt.Errorf("instances of image set %s listed for image set %s", ans.ImageSetID, src.setID)
		default:
			src.load(ans, time.Now())
		}
		mu.Lock()
		out[pk] = src
		mu.Unlock()
	})
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pull: list DICOM instances: %w", err)
	}
	return out, nil
}

// setState is one DICOM image set value being pulled into its folder.
type setState struct {
	item   *itemState
	folder string // final folder name inside the item folder
	src    *setSource
	jobs   []*fileJob
	names  map[string]bool // the instances' file names

	once sync.Once
	done bool // already complete under folder: nothing to download
	err  error

	mu      sync.Mutex
	pending int // instances not yet finished in this run
	failed  bool
}

// staging is the folder the set's instances are downloaded into.
func (s *setState) staging() string { return s.folder + partSuffix }

// planSet makes one job per instance of the set, named after its SOP
// Instance UID (sanitised; "instance-<n>.dcm" when that leaves nothing or
// collides), inside the set's staging folder.
func planSet(st *itemState, slug, folder string, src *setSource) ([]*fileJob, error) {
	switch {
	case src == nil:
		return nil, errors.New("its DICOM instances were not listed")
	case src.err != nil:
		return nil, fmt.Errorf("list DICOM instances: %w", src.err)
	case len(src.order) == 0:
		return nil, fmt.Errorf("DICOM image set %s lists no instances", src.setID)
	}
	set := &setState{item: st, folder: folder, src: src, names: map[string]bool{}, pending: len(src.order)}
	used := map[string]bool{}
	for i, sop := range src.order {
		name := Sanitize(sop)
		if name != "" {
			name += ".dcm"
		}
		for n := i + 1; name == "" || used[fold(name)]; n++ {
			name = fmt.Sprintf("instance-%d.dcm", n)
		}
		used[fold(name)] = true
		set.names[name] = true
		set.jobs = append(set.jobs, &fileJob{
			item: st, iface: slug, url: src.reqs[sop].URL,
			name:   path.Join(set.staging(), name),
			source: "dicom:" + src.setID + "/" + sop,
			set:    set, sop: sop, refused: -1,
		})
	}
	return set.jobs, nil
}

// prepareSet decides, once per set, whether the set is already complete
// under its final folder (then every instance is skipped), and otherwise
// makes the staging folder hold nothing but files of this set.
func (p *puller) prepareSet(s *setState) (bool, error) {
	s.once.Do(func() {
		all := true
		for _, j := range s.jobs {
			ok, err := p.completeAt(s.item, path.Join(s.folder, path.Base(j.name)), j.source)
			if err != nil {
				s.err = fmt.Errorf("check %s: %w", path.Join(s.item.folder, s.folder), err)
				return
			}
			if !ok {
				all = false
				break
			}
		}
		staging := path.Join(s.item.folder, s.staging())
		if all {
			s.done = true
			// A staging folder beside a complete set is from an older run.
			if err := p.root.RemoveAll(staging); err != nil {
				p.log.Warn("remove stale staging folder", "folder", staging, "err", err)
			}
			return
		}
		s.err = p.cleanStaging(s, staging)
	})
	return s.done, s.err
}

// cleanStaging creates the staging folder, or empties it of files that are
// not instances of this set (left by an older set of the same value), so
// that the folder renamed into place holds this set and nothing else.
func (p *puller) cleanStaging(s *setState, staging string) error {
	fi, err := p.root.Lstat(staging)
	if err == nil && !fi.IsDir() {
		if err := p.root.Remove(staging); err != nil {
			return fmt.Errorf("remove %s: %w", staging, err)
		}
	} else if err != nil && !isNotExist(err) {
		return fmt.Errorf("check %s: %w", staging, err)
	}
	if err := p.root.MkdirAll(staging, dirPerm); err != nil {
		return fmt.Errorf("create %s: %w", staging, err)
	}
	d, err := p.root.Open(staging)
	if err != nil {
		return fmt.Errorf("open %s: %w", staging, err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("list %s: %w", staging, err)
	}
	for _, n := range names {
		if !s.names[n] {
			if err := p.root.RemoveAll(path.Join(staging, n)); err != nil {
				return fmt.Errorf("remove %s: %w", path.Join(staging, n), err)
			}
		}
	}
	return nil
}

// downloadInstance downloads one instance with a signed request that is
// fresh enough, asking for new ones after a refusal.
func (p *puller) downloadInstance(ctx context.Context, j *fileJob, w io.Writer) error {
	req, gen, err := j.set.src.request(ctx, j.sop, j.refused)
	if err != nil {
		return err
	}
	j.refused = -1
	_, err = p.c.DownloadSigned(ctx, req, w)
	var e *gcapi.Error
	if errors.As(err, &e) && e.StatusCode == http.StatusForbidden {
		j.refused = gen
		return fmt.Errorf("%w: %w", errSignatureRefused, err)
	}
	return err
}

// finishInstance counts an instance of a set as finished (ok: complete on
// disk) and, when it was the set's last and every one is complete, moves
// the staging folder to the set's final name.
func (p *puller) finishInstance(j *fileJob, ok bool) error {
	s := j.set
	s.mu.Lock()
	s.pending--
	if !ok {
		s.failed = true
	}
	last := s.pending == 0
	failed := s.failed
	s.mu.Unlock()
	if !last || failed || s.done {
		return nil
	}
	if err := p.promoteSet(s); err != nil {
		return fmt.Errorf("item %q (%s) interface %s: %w", s.item.title, s.item.pk, j.iface, err)
	}
	return nil
}

// promoteSet replaces whatever is under the set's final name with the
// complete staging folder and moves the download records with it. A crash
// between the removal and the rename leaves the complete staging folder,
// which the next pull promotes without downloading anything.
func (p *puller) promoteSet(s *setState) error {
	st := s.item
	final := path.Join(st.folder, s.folder)
	staging := path.Join(st.folder, s.staging())
	if err := p.root.RemoveAll(final); err != nil {
		return fmt.Errorf("remove the older %s: %w", final, err)
	}
	if err := p.root.Rename(staging, final); err != nil {
		return fmt.Errorf("rename %s to %s: %w", staging, final, err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	moved := map[string]manifestEntry{}
	for k, e := range st.man.Files {
		if strings.HasPrefix(k, s.folder+"/") {
			delete(st.man.Files, k) // the older folder's, now gone
		}
		if rest, ok := strings.CutPrefix(k, s.staging()+"/"); ok {
			delete(st.man.Files, k)
			if s.names[rest] { // others were files of an older set, removed from the folder
				moved[s.folder+"/"+rest] = e
			}
		}
	}
	for k, e := range moved {
		st.man.Files[k] = e
	}
	if err := p.saveManifestLocked(st); err != nil {
		return fmt.Errorf("record %s: %w", final, err)
	}
	p.log.Debug("DICOM image set complete", "folder", final, "instances", len(s.jobs))
	return nil
}
