package ingest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/state"
)

// stepUpload sends every upload of the item not yet Completed, building
// its spool files (ZIPs, JSON files) first when they are missing.
func (p *Pipeline) stepUpload(ctx context.Context, img *state.Image) error {
	if err := p.ensureSpools(ctx, img); err != nil {
		return err
	}
	if img.State != state.Uploading {
		return nil // went back to pending
	}
	if len(img.Uploads) == 0 {
		return p.save(img, func(r *state.Image) { r.State, r.ItemIntentAt = state.Uploaded, p.cfg.Now().UTC() })
	}
	var total, sent int64
	for _, u := range img.Uploads {
		total += u.Size
		if u.Completed {
			sent += u.Size
		}
	}
	p.setProgress(img, sent, total)
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
		r.State, r.Uploads, r.Values = state.Pending, nil, nil
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

// nameLock serialises creating uploads of one filename with scanning for
// orphans of that filename.
type nameLock struct {
	mu   sync.Mutex
	refs int
}

// lockName locks filename and returns its unlock.
func (p *Pipeline) lockName(filename string) (unlock func()) {
	p.mu.Lock()
	l := p.names[filename]
	if l == nil {
		l = &nameLock{}
		p.names[filename] = l
	}
	l.refs++
	p.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		p.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(p.names, filename)
		}
		p.mu.Unlock()
	}
}

func (p *Pipeline) addCreated(id uint64, pk string) {
	p.mu.Lock()
	p.created[id] = append(p.created[id], pk)
	p.mu.Unlock()
}
