package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/state"
)

// inputError is a problem with the files themselves (gone, empty,
// unreadable): permanent, the image fails with this message.
type inputError struct{ msg string }

func (e *inputError) Error() string { return e.msg }

func inputErrorf(format string, args ...any) error {
	return &inputError{msg: fmt.Sprintf(format, args...)}
}

// importError is the server's own report that it could not import the
// image: permanent.
type importError struct{ msg string }

func (e *importError) Error() string { return e.msg }

// configError is a problem of the configuration or the account (an
// archive that cannot be found): never the image's fault, so retried.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// storeError is a failed state write: the pipeline stops taking work.
type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// waitError asks for the image to be looked at again at a given time,
// without an error (an import still running, a file still being written).
type waitError struct{ at time.Time }

func (e *waitError) Error() string { return "wait until " + e.at.String() }

// save commits fn's change to img in one transaction and refreshes img.
func (p *Pipeline) save(img *state.Image, fn func(*state.Image)) error {
	out, err := p.store.Update(img.ID, func(r *state.Image) error { fn(r); return nil })
	if err != nil {
		return &storeError{err}
	}
	*img = out
	return nil
}

// process moves one image as far as it can go now.
func (p *Pipeline) process(ctx context.Context, id uint64) {
	img, err := p.store.Get(id)
	if err != nil {
		p.log.Error("read image record", "id", id, "err", err)
		return
	}
	for {
		if ctx.Err() != nil {
			return
		}
		if p.cfg.BeforeStep != nil {
			if err := p.cfg.BeforeStep(id, img.State); err != nil {
				return
			}
		}
		var err error
		switch img.State {
		case state.Pending:
			err = p.stepHash(ctx, &img)
		case state.Uploading:
			err = p.stepUpload(ctx, &img)
		case state.Uploaded, state.Item:
			err = p.stepItem(ctx, &img)
		case state.Attaching:
			err = p.stepReattach(ctx, &img)
		case state.Importing:
			err = p.stepPoll(ctx, &img)
		case state.Done, state.Duplicate:
			if img.ActionDone {
				return
			}
			err = p.stepAfter(ctx, &img)
		case state.Failed:
			if img.ActionDone {
				return
			}
			err = p.stepFailedFiles(ctx, &img)
		case state.Retrying:
			if img.NextAttempt.After(p.cfg.Now()) {
				p.enqueue(id, img.NextAttempt)
				return
			}
			err = p.save(&img, func(r *state.Image) {
				r.State, r.RetryFrom, r.NextAttempt = r.RetryFrom, "", time.Time{}
				if r.State == "" {
					r.State = state.Pending
				}
			})
		case state.Finished:
			return
		default:
			err = fmt.Errorf("unknown state %q", img.State)
		}
		if err != nil {
			p.handle(ctx, &img, err)
			return
		}
	}
}

// handle decides what an error means for the image.
func (p *Pipeline) handle(ctx context.Context, img *state.Image, err error) {
	var we *waitError
	var se *storeError
	switch {
	case errors.As(err, &we):
		p.enqueue(img.ID, we.at)
		return
	case errors.As(err, &se):
		p.stop(se.err)
		return
	case ctx.Err() != nil:
		// Shutting down: the state is as last committed; the next run
		// continues from there.
		p.log.Debug("image parked", "id", img.ID, "state", img.State)
		return
	}
	log := p.log.With("id", img.ID, "key", img.Key, "state", img.State)
	// img may know more than the state file (upload pks and completions
	// not committed yet): keep them.
	uploads := cloneUploads(img.Uploads)
	from := img.State
	if from == state.Retrying {
		from = img.RetryFrom
	}
	if from == state.Failed || from == state.Done || from == state.Duplicate {
		// The image's fate is known; only its file action (or the abort
		// of its uploads) failed. Try that again later, never changing
		// the state: an imported image is never marked failed.
		next := p.cfg.Now().Add(p.backoff(img.Attempts + 1))
		log.Error("after-upload action failed; will try again", "err", err, "at", next.Format(time.RFC3339))
		_ = p.save(img, func(r *state.Image) { r.Attempts++; r.LastError = err.Error() })
		p.enqueue(img.ID, next)
		return
	}
	if permanent(err) {
		log.Error("image failed", "err", err)
		p.mu.Lock()
		delete(p.polls, img.ID)
		delete(p.created, img.ID)
		p.mu.Unlock()
		if serr := p.save(img, func(r *state.Image) {
			r.Uploads = uploads
			r.State, r.RetryFrom, r.LastError, r.NextAttempt = state.Failed, "", err.Error(), time.Time{}
		}); serr != nil {
			p.handle(ctx, img, serr)
			return
		}
		if cerr := p.stepFailedFiles(ctx, img); cerr != nil {
			p.handle(ctx, img, cerr)
		}
		return
	}
	next := p.cfg.Now().Add(p.backoff(img.Attempts + 1))
	if serr := p.save(img, func(r *state.Image) {
		r.Uploads = uploads
		r.State, r.RetryFrom = state.Retrying, from
		r.Attempts++
		r.LastError, r.NextAttempt = err.Error(), next
	}); serr != nil {
		p.handle(ctx, img, serr)
		return
	}
	log.Warn("transient error; retrying", "err", err, "attempt", img.Attempts, "at", next.Format(time.RFC3339))
	p.enqueue(img.ID, next)
}

// permanent reports whether err will not go away by trying again.
func permanent(err error) bool {
	var ie *inputError
	var me *importError
	var ce *configError
	switch {
	case errors.As(err, &ie) || errors.As(err, &me):
		return true
	case errors.As(err, &ce):
		return false
	}
	var ge *gcapi.Error
	if !errors.As(err, &ge) {
		return false // network trouble, or something we do not know: keep trying
	}
	m := strings.ToLower(ge.Message)
	switch {
	case ge.StatusCode == http.StatusUnauthorized:
		return false // the token, not this image: fixed by the operator
	case ge.StatusCode == http.StatusForbidden && strings.Contains(m, "upload limit"):
		return false // the byte quota frees up as imports consume uploads
	case ge.StatusCode == http.StatusBadRequest && strings.Contains(m, "too many uploads"):
		return false
	case ge.StatusCode == http.StatusRequestTimeout, ge.StatusCode == http.StatusTooManyRequests:
		return false
	}
	return ge.StatusCode >= 400 && ge.StatusCode < 500
}

func (p *Pipeline) watchOf(img *state.Image) (Watch, error) {
	w, ok := p.watches[img.Watch]
	if !ok {
		return Watch{}, inputErrorf("watch %s is no longer configured", img.Watch)
	}
	return w, nil
}

// stepHash reads every file once: sizes, times, SHA-256, and plans the
// uploads.
func (p *Pipeline) stepHash(ctx context.Context, img *state.Image) error {
	w, err := p.watchOf(img)
	if err != nil {
		return err
	}
	files := slices.Clone(img.Files)
	for i := range files {
		f := &files[i]
		before, err := statFile(f.Path, "before upload")
		if err != nil {
			return err
		}
		if before.Size() == 0 {
			return inputErrorf("%s is empty (0 bytes); nothing to upload", f.Path)
		}
		sum, err := hashFile(ctx, f.Path)
		if err != nil {
			return err
		}
		after, err := statFile(f.Path, "while it was read")
		if err != nil {
			return err
		}
		if after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) {
			p.log.Info("file changed while it was read; reading it again shortly", "id", img.ID, "file", f.Path)
			return &waitError{at: p.cfg.Now().Add(2 * time.Second)}
		}
		f.Size, f.ModTime, f.SHA256 = after.Size(), after.ModTime().UTC(), sum
	}
	title := renderTitle(w.Title, img.Key, files)
	now := p.cfg.Now().UTC()
	var uploads []state.Upload
	spool := ""
	switch Kind(img.Kind) {
	case KindSingle, KindMHD:
		seen := map[string]bool{}
		for _, f := range files {
			name := filepath.Base(f.Path)
			if seen[name] {
				return inputErrorf("%s: two files named %s in one image; the server needs unique names", img.Key, name)
			}
			seen[name] = true
			uploads = append(uploads, state.Upload{Filename: name, Path: f.Path, Size: f.Size, PartSize: p.cfg.PartSize, IntentAt: now})
		}
	case KindZip:
		spool = filepath.Join(p.cfg.SpoolDir, fmt.Sprintf("%06d.zip", img.ID))
		uploads = []state.Upload{{Filename: "image-" + titleHash(files) + ".zip", Path: spool, PartSize: p.cfg.PartSize, IntentAt: now}}
	case KindFolder:
		values, ups, itemPK, err := p.planFolder(ctx, img, w, files)
		var ce *changedError
		if errors.As(err, &ce) {
			p.log.Info("file changed while it was read; reading it again shortly", "id", img.ID, "file", ce.file)
			return &waitError{at: p.cfg.Now().Add(2 * time.Second)}
		}
		if err != nil {
			return err
		}
		return p.save(img, func(r *state.Image) {
			r.Files, r.Title, r.Uploads, r.Spool, r.Values = files, title, ups, "", values
			if itemPK != "" || r.TargetItem {
				r.ItemPK = itemPK
			}
			r.TargetItem = itemPK != ""
			r.State = state.Uploading
			if len(ups) == 0 {
				// JSON values only: nothing to upload.
				r.State, r.ItemIntentAt = state.Uploaded, now
			}
		})
	default:
		return inputErrorf("%s: groups of kind %q are not handled by the pipeline", img.Key, img.Kind)
	}
	return p.save(img, func(r *state.Image) {
		r.Files, r.Title, r.Uploads, r.Spool = files, title, uploads, spool
		r.State = state.Uploading
	})
}

func statFile(name, when string) (os.FileInfo, error) {
	fi, err := os.Stat(name)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, inputErrorf("%s was deleted %s", name, when)
	case errors.Is(err, os.ErrPermission):
		return nil, inputErrorf("cannot read %s: permission denied", name)
	case err != nil:
		return nil, fmt.Errorf("stat %s: %w", name, err)
	case !fi.Mode().IsRegular():
		return nil, inputErrorf("%s is not a regular file", name)
	}
	return fi, nil
}

// changedFile returns the first source file whose size or modification
// time differs from what was hashed, or "" when none did.
func changedFile(img *state.Image, when string) (string, error) {
	for _, f := range img.Files {
		fi, err := statFile(f.Path, when)
		if err != nil {
			return "", err
		}
		if fi.Size() != f.Size || !fi.ModTime().Equal(f.ModTime) {
			return f.Path, nil
		}
	}
	return "", nil
}

// stepUpload sends every upload of the image not yet Completed.
func (p *Pipeline) stepUpload(ctx context.Context, img *state.Image) error {
	if Kind(img.Kind) == KindZip && !img.Uploads[0].Completed {
		if err := p.ensureSpool(ctx, img); err != nil {
			return err
		}
	}
	if Kind(img.Kind) == KindFolder {
		if err := p.ensureFolderSpools(ctx, img); err != nil {
			return err
		}
		if img.State != state.Uploading {
			return nil // went back to pending
		}
		if len(img.Uploads) == 0 {
			return p.save(img, func(r *state.Image) { r.State, r.ItemIntentAt = state.Uploaded, p.cfg.Now().UTC() })
		}
	}
	var total, sent int64
	for _, u := range img.Uploads {
		total += u.Size
		if u.Completed {
			sent += u.Size
		}
	}
	p.setProgress(img.ID, sent, total)
	for i := range img.Uploads {
		if img.Uploads[i].Completed {
			continue
		}
		// Right before sending: the bytes must be the ones hashed.
		changed, err := changedFile(img, "before upload")
		if err != nil {
			return err
		}
		if changed != "" {
			return p.backToPending(ctx, img, changed)
		}
		if err := p.uploadOne(ctx, img, i); err != nil {
			return err
		}
		changed, err = changedFile(img, "during upload")
		if err != nil {
			return err
		}
		if changed != "" {
			return p.backToPending(ctx, img, changed)
		}
	}
	return nil
}

// uploadOne sends upload i of img, creating or resuming it.
//
// A file larger than one part has its pk recorded before any part is sent
// and each part as it is accepted, so a restart resumes it. A file of one
// part is cheaper to send again than to record: its pk stays in memory
// until the "attaching" commit, and after a crash the upload is found by
// the orphan scan (Initialized: aborted) or simply left to expire
// (Completed). The last upload's completion is not committed either: the
// server's upload status is the truth a restart asks for.
func (p *Pipeline) uploadOne(ctx context.Context, img *state.Image, i int) error {
	u := img.Uploads[i]
	if u.PK == "" && (u.IntentAt.Before(p.started) || img.Attempts > 0) {
		// A create may have reached the server without its answer
		// reaching us (crash, lost response): abort such orphans first.
		if err := p.abortOrphans(ctx, u.Filename, u.IntentAt); err != nil {
			return err
		}
	}
	f, err := os.Open(u.Path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return inputErrorf("%s was deleted before upload", u.Path)
		}
		if errors.Is(err, os.ErrPermission) {
			return inputErrorf("cannot read %s: permission denied", u.Path)
		}
		return fmt.Errorf("open %s: %w", u.Path, err)
	}
	defer f.Close()
	partSize := u.PartSize
	if partSize <= 0 {
		partSize = gcapi.DefaultPartSize
	}
	singlePart := u.Size <= max(partSize, gcapi.MinPartSize)
	// No orphan scan for this name may run while our create is in flight:
	// it would take our new upload for an orphan.
	unlock := func() {}
	if u.PK == "" {
		unlock = p.lockName(u.Filename)
	}
	defer func() { unlock() }()
	fu := gcapi.FileUpload{
		Filename:        u.Filename,
		Body:            f,
		Size:            u.Size,
		PartSize:        partSize,
		PartConcurrency: p.cfg.PartConcurrency,
		OnCreated: func(up *gcapi.Upload) error {
			p.addCreated(img.ID, up.PK)
			unlock()
			unlock = func() {}
			ru := &img.Uploads[i]
			ru.PK, ru.S3UploadID, ru.APIURL, ru.Created, ru.Parts = up.PK, up.S3UploadID, up.APIURL, up.Created, nil
			if singlePart {
				return nil
			}
			return p.save(img, func(r *state.Image) {
				ru := &r.Uploads[i]
				ru.PK, ru.S3UploadID, ru.APIURL, ru.Created = up.PK, up.S3UploadID, up.APIURL, up.Created
				ru.Parts = nil
			})
		},
		OnPart: func(part gcapi.Part) error {
			if singlePart {
				return nil
			}
			return p.save(img, func(r *state.Image) {
				ru := &r.Uploads[i]
				ru.Parts = slices.DeleteFunc(ru.Parts, func(q state.Part) bool { return q.Number == part.PartNumber })
				ru.Parts = append(ru.Parts, state.Part{Number: part.PartNumber, ETag: part.ETag, Size: part.Size})
			})
		},
		Progress: func(n int64) { p.addProgress(img.ID, n) },
	}
	if u.PK != "" {
		fu.Resume = &gcapi.Upload{PK: u.PK, S3UploadID: u.S3UploadID, APIURL: u.APIURL, Filename: u.Filename, Status: gcapi.UploadInitialized}
		for _, q := range u.Parts {
			fu.Done = append(fu.Done, gcapi.Part{PartNumber: q.Number, ETag: q.ETag, Size: q.Size})
		}
	}
	done, err := p.api.UploadFile(ctx, fu)
	if err != nil {
		return fmt.Errorf("upload %s: %w", u.Path, err)
	}
	if done.PK != u.PK {
		p.addCreated(img.ID, done.PK)
	}
	ru := &img.Uploads[i]
	ru.PK, ru.S3UploadID, ru.APIURL, ru.Completed = done.PK, done.S3UploadID, done.APIURL, true
	if i == len(img.Uploads)-1 {
		// Committed with the item pk. A restart before that commit finds
		// no item intent after its start and looks the title up first.
		img.State, img.ItemIntentAt = state.Uploaded, p.cfg.Now().UTC()
		return nil
	}
	uploads := cloneUploads(img.Uploads)
	return p.save(img, func(r *state.Image) { r.Uploads = uploads })
}

func cloneUploads(in []state.Upload) []state.Upload {
	out := slices.Clone(in)
	for i := range out {
		out[i].Parts = slices.Clone(out[i].Parts)
	}
	return out
}

// abortOrphans aborts Initialized uploads named filename that no image
// records: uploads whose create reached the server but whose pk never
// reached the state file.
//
// Only uploads created after intentAt (less orphanClockSkew for the
// server's clock) can be ours: an older one with the same name belongs to
// someone else using the account, and is left alone.
func (p *Pipeline) abortOrphans(ctx context.Context, filename string, intentAt time.Time) error {
	defer p.lockName(filename)()
	ups, err := p.api.Uploads(ctx)
	if err != nil {
		return fmt.Errorf("list uploads to find unrecorded %s: %w", filename, err)
	}
	var cands []gcapi.Upload
	for _, u := range ups {
		tooOld := !intentAt.IsZero() && !u.Created.IsZero() && u.Created.Before(intentAt.Add(-orphanClockSkew))
		if u.Filename == filename && u.Status == gcapi.UploadInitialized && !tooOld {
			cands = append(cands, u)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	known, err := p.recordedUploads()
	if err != nil {
		return err
	}
	for _, u := range cands {
		if known[u.PK] {
			continue
		}
		p.log.Info("aborting an upload whose pk was never recorded", "upload", u.PK, "file", filename)
		if _, err := p.api.AbortUpload(ctx, &u); err != nil {
			return fmt.Errorf("abort unrecorded upload %s of %s: %w", u.PK, filename, err)
		}
	}
	return nil
}

// orphanClockSkew is how far the server's clock may lag ours.
const orphanClockSkew = 10 * time.Minute

// recordedUploads returns every upload pk in the state file, and those
// being created right now.
func (p *Pipeline) recordedUploads() (map[string]bool, error) {
	imgs, err := p.store.List(state.Uploading, state.Retrying, state.Uploaded, state.Item, state.Attaching, state.Importing)
	if err != nil {
		return nil, &storeError{err}
	}
	known := map[string]bool{}
	p.mu.Lock()
	for _, pks := range p.created {
		for _, pk := range pks {
			known[pk] = true
		}
	}
	p.mu.Unlock()
	for _, img := range imgs {
		for _, u := range img.Uploads {
			if u.PK != "" {
				known[u.PK] = true
			}
		}
	}
	return known, nil
}

// backToPending abandons the uploads of an image whose file changed after
// it was hashed; the image is hashed again.
func (p *Pipeline) backToPending(ctx context.Context, img *state.Image, changed string) error {
	p.log.Info("file changed after it was hashed; hashing it again", "id", img.ID, "file", changed)
	if err := p.abortOpen(ctx, img); err != nil {
		return err
	}
	p.removeSpools(img)
	return p.save(img, func(r *state.Image) {
		r.State, r.Uploads, r.Spool, r.Values = state.Pending, nil, "", nil
	})
}

// abortOpen aborts the image's uploads that are still Initialized, so that
// no multipart upload is left open. It asks the server first: aborting an
// upload that is not Initialized is a server error.
func (p *Pipeline) abortOpen(ctx context.Context, img *state.Image) error {
	for _, u := range img.Uploads {
		if u.PK == "" {
			if !u.IntentAt.IsZero() && !u.Completed {
				if err := p.abortOrphans(ctx, u.Filename, u.IntentAt); err != nil {
					return err
				}
			}
			continue
		}
		if u.Completed {
			continue
		}
		cur, err := p.api.Upload(ctx, u.PK)
		if gcapi.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("check upload %s of %s before aborting: %w", u.PK, u.Path, err)
		}
		if cur.Status != gcapi.UploadInitialized {
			continue
		}
		if _, err := p.api.AbortUpload(ctx, cur); err != nil && !gcapi.IsNotFound(err) {
			return fmt.Errorf("abort upload %s of %s: %w", u.PK, u.Path, err)
		}
	}
	return nil
}

// archive returns the watch's archive, asked once per run.
func (p *Pipeline) archive(ctx context.Context, slug string) (*gcapi.Archive, error) {
	p.mu.Lock()
	a := p.archives[slug]
	p.mu.Unlock()
	if a != nil {
		return a, nil
	}
	a, err := p.api.ArchiveBySlug(ctx, slug)
	if err != nil {
		// The configuration's problem, not the image's: keep retrying
		// (visible in status) rather than failing every image.
		return nil, &configError{fmt.Errorf("find archive %s: %w", slug, err)}
	}
	p.mu.Lock()
	p.archives[slug] = a
	p.mu.Unlock()
	return a, nil
}

func imageURL(it *gcapi.ArchiveItem, iface string) string {
	if v := it.Value(iface); v != nil && v.Image != nil {
		return *v.Image
	}
	return ""
}

// stepItem finds or creates the archive item by title, then sends the
// PATCH, recording the item pk and "PATCH sent" first.
func (p *Pipeline) stepItem(ctx context.Context, img *state.Image) error {
	w, err := p.watchOf(img)
	if err != nil {
		return err
	}
	ar, err := p.archive(ctx, w.Archive)
	if err != nil {
		return err
	}
	if Kind(img.Kind) == KindFolder {
		return p.stepFolderItem(ctx, img, w, ar)
	}
	var it *gcapi.ArchiveItem
	switch {
	case img.ItemPK != "":
		if it, err = p.api.ArchiveItem(ctx, img.ItemPK); err != nil {
			return fmt.Errorf("get archive item %s: %w", img.ItemPK, err)
		}
	case img.ItemIntentAt.Before(p.started) || img.Attempts > 0:
		// A create may have happened without us hearing of it.
		if it, err = p.api.ArchiveItemByTitle(ctx, ar.PK, img.Title); err != nil {
			return fmt.Errorf("find archive item %q: %w", img.Title, err)
		}
	}
	if it == nil {
		it, err = p.api.CreateArchiveItem(ctx, ar.APIURL, img.Title)
		if gcapi.IsTitleConflict(err) {
			it, err = p.api.ArchiveItemByTitle(ctx, ar.PK, img.Title)
			if err == nil && it == nil {
				err = fmt.Errorf("create archive item %q: the title is taken but no item with it is visible", img.Title)
			}
		}
		if err != nil {
			return fmt.Errorf("create archive item %q: %w", img.Title, err)
		}
	}
	uploads := cloneUploads(img.Uploads) // completions known only in memory so far
	if cur := imageURL(it, w.Interface); cur != "" && !strings.Contains(cmp.Or(w.Title, DefaultTitle), "{hash}") {
		// Without {hash} in the title, the same title says nothing about
		// the content: never replace what the item holds.
		return inputErrorf("archive item %s titled %q already holds an image for %s; not replacing it "+
			"(put {hash} in the watch's title template to keep changed content apart)", it.PK, img.Title, w.Interface)
	}
	if cur := imageURL(it, w.Interface); cur != "" {
		// Same title means same path and same content hash: this image is
		// in the archive already. No second item, no replaced value.
		p.log.Info("identical image already in the archive; not sending it again", "id", img.ID, "item", it.PK, "title", img.Title)
		return p.save(img, func(r *state.Image) {
			r.Uploads = uploads
			r.ItemPK, r.ImageURL, r.ImagePK = it.PK, cur, lastSegment(cur)
			r.State = state.Duplicate
			r.LastError = fmt.Sprintf("item %s with title %q already holds an image for %s", it.PK, img.Title, w.Interface)
		})
	}
	intent := img.ItemIntentAt
	if err := p.save(img, func(r *state.Image) {
		r.Uploads, r.ItemIntentAt = uploads, intent
		r.ItemPK, r.PrevValue = it.PK, ""
		r.PatchSentAt = p.cfg.Now().UTC()
		r.State = state.Attaching
	}); err != nil {
		return err
	}
	return p.sendPatch(ctx, img, w)
}

func lastSegment(u string) string {
	return path.Base(strings.TrimSuffix(u, "/"))
}

func (p *Pipeline) sendPatch(ctx context.Context, img *state.Image, w Watch) error {
	var urls []string
	for _, u := range img.Uploads {
		urls = append(urls, u.APIURL)
	}
	_, err := p.api.UpdateArchiveItem(ctx, img.ItemPK, []gcapi.ValueUpdate{{Interface: w.Interface, UserUploads: urls}})
	if err != nil {
		return fmt.Errorf("attach uploads to archive item %s: %w", img.ItemPK, err)
	}
	p.mu.Lock()
	p.polls[img.ID] = 0
	p.mu.Unlock()
	// A quick import is done before we could record "importing": look once
	// first and save a commit. Until then the record says "attaching",
	// which a restart reconciles without sending the PATCH again.
	it, err := p.api.ArchiveItem(ctx, img.ItemPK)
	if err == nil {
		if cur := imageURL(it, w.Interface); cur != img.PrevValue {
			return p.markDone(img, w, cur)
		}
	}
	return p.save(img, func(r *state.Image) { r.State = state.Importing })
}

// stepReattach reconciles an image whose PATCH may or may not have reached
// the server, and sends it only if it did not.
func (p *Pipeline) stepReattach(ctx context.Context, img *state.Image) error {
	w, err := p.watchOf(img)
	if err != nil {
		return err
	}
	if Kind(img.Kind) == KindFolder {
		return p.stepFolderReattach(ctx, img, w)
	}
	it, err := p.api.ArchiveItem(ctx, img.ItemPK)
	if err != nil {
		return fmt.Errorf("get archive item %s: %w", img.ItemPK, err)
	}
	if cur := imageURL(it, w.Interface); cur != img.PrevValue {
		return p.markDone(img, w, cur)
	}
	if shown, err := p.patchArrived(ctx, img, img.Uploads, "the image"); err != nil || shown {
		return err
	}
	// The item does not hold it, no import runs or failed, the uploads are
	// still there unconsumed: the PATCH never arrived.
	return p.sendPatch(ctx, img, w)
}

// patchArrived looks for signs that a PATCH sending these uploads reached
// the server although the item does not show it yet: an import session
// built from them (Failed: the import error, naming what), or an upload
// consumed by an import (or expired). Either moves img to importing, to
// wait and see: such a PATCH is never sent twice. false means nothing shows
// it, so it never arrived.
func (p *Pipeline) patchArrived(ctx context.Context, img *state.Image, uploads []state.Upload, what string) (bool, error) {
	se, err := p.findSession(ctx, img)
	if err != nil {
		return false, err
	}
	if se != nil {
		if se.Status == gcapi.SessionFailed {
			return true, &importError{msg: "the server could not import " + what + ": " + se.ErrorMessage}
		}
		return true, p.save(img, func(r *state.Image) { r.State, r.SessionPK = state.Importing, se.PK })
	}
	for _, u := range uploads {
		cur, err := p.api.Upload(ctx, u.PK)
		if gcapi.IsNotFound(err) {
			return true, p.save(img, func(r *state.Image) { r.State = state.Importing })
		}
		if err != nil {
			return false, fmt.Errorf("check upload %s: %w", u.PK, err)
		}
		if cur.Status != gcapi.UploadCompleted {
			return false, fmt.Errorf("upload %s is %s, not Completed", u.PK, cur.Status)
		}
	}
	return false, nil
}

// findSession returns the server-made upload session built from the
// image's uploads, or nil.
func (p *Pipeline) findSession(ctx context.Context, img *state.Image) (*gcapi.UploadSession, error) {
	if img.SessionPK != "" {
		se, err := p.api.UploadSession(ctx, img.SessionPK)
		if err != nil {
			return nil, fmt.Errorf("get upload session %s: %w", img.SessionPK, err)
		}
		return se, nil
	}
	sessions, err := p.api.UploadSessions(ctx)
	if err != nil {
		return nil, fmt.Errorf("list upload sessions: %w", err)
	}
	ours := map[string]bool{}
	for _, u := range img.Uploads {
		ours[u.PK] = true
	}
	for i := range sessions {
		for _, pk := range sessions[i].UserUploads {
			if ours[pk] {
				return &sessions[i], nil
			}
		}
	}
	return nil, nil
}

// stepPoll looks once at an importing image and schedules the next look.
func (p *Pipeline) stepPoll(ctx context.Context, img *state.Image) error {
	w, err := p.watchOf(img)
	if err != nil {
		return err
	}
	if Kind(img.Kind) == KindFolder {
		return p.stepFolderPoll(ctx, img, w)
	}
	it, err := p.api.ArchiveItem(ctx, img.ItemPK)
	if err != nil {
		return fmt.Errorf("get archive item %s: %w", img.ItemPK, err)
	}
	if cur := imageURL(it, w.Interface); cur != img.PrevValue {
		return p.markDone(img, w, cur)
	}
	return p.pollMore(ctx, img)
}

// pollMore checks, now and then, whether an import of the image's uploads
// failed, notes an import that takes very long, and schedules the next look.
func (p *Pipeline) pollMore(ctx context.Context, img *state.Image) error {
	p.mu.Lock()
	n := p.polls[img.ID]
	p.polls[img.ID] = n + 1
	p.mu.Unlock()
	// Listing sessions is costly (all of them, every page): only once an
	// import takes a while, and then every third look.
	if img.SessionPK != "" || (n >= 2 && n%3 == 2) {
		se, err := p.findSession(ctx, img)
		if err != nil {
			return err
		}
		if se != nil {
			if se.Status == gcapi.SessionFailed {
				return &importError{msg: "the server could not import the image: " + se.ErrorMessage}
			}
			if img.SessionPK == "" {
				if err := p.save(img, func(r *state.Image) { r.SessionPK = se.PK }); err != nil {
					return err
				}
			}
		}
	}
	now := p.cfg.Now()
	if now.Sub(img.PatchSentAt) > p.cfg.ImportTimeout && img.LastError == "" {
		msg := fmt.Sprintf("the import has not finished %s after the uploads were attached; still waiting", p.cfg.ImportTimeout)
		p.log.Warn(msg, "id", img.ID, "item", img.ItemPK)
		if err := p.save(img, func(r *state.Image) { r.LastError = msg }); err != nil {
			return err
		}
	}
	return &waitError{at: now.Add(p.pollWait(n))}
}

// markDone records the imported image. The after-upload action comes
// first and is idempotent (a moved file is found at its target, a deleted
// one is gone), so done, the action and finished are one commit; if the
// process dies between the action and the commit, the next run finds the
// value on the item again and finishes the job.
func (p *Pipeline) markDone(img *state.Image, w Watch, imageURL string) error {
	p.mu.Lock()
	delete(p.polls, img.ID)
	delete(p.created, img.ID)
	p.mu.Unlock()
	movedTo, actErr := afterAction(img, w)
	if actErr == nil {
		p.removeSpools(img)
	}
	values := state.CloneValues(img.Values) // a folder's confirmations, known only in memory so far
	err := p.save(img, func(r *state.Image) {
		if values != nil {
			r.Values = values
		}
		r.State, r.ImageURL, r.ImagePK = state.Done, imageURL, lastSegment(imageURL)
		r.LastError, r.Attempts = "", 0
		if actErr == nil {
			r.State, r.ActionDone, r.MovedTo, r.Finished = state.Finished, true, movedTo, p.cfg.Now().UTC()
		}
	})
	if err != nil {
		return err
	}
	p.log.Info("image imported", "id", img.ID, "key", img.Key, "item", img.ItemPK, "image", img.ImagePK)
	return actErr
}
