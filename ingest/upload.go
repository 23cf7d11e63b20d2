package ingest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/state"
)

// uploader takes an image from pending to uploaded: it hashes its files
// and plans its values (stepHash), builds what is sent (ensureSpools) and
// sends every upload (stepUpload), committing each upload's pk before
// its first byte.
type uploader struct {
	*records
	cfg      PipelineConfig
	api      API
	plan     *planner    // what values and uploads an item gets
	secret   *deidSecret // the de-identification secret, read once
	progress progressSink
	// inArchive looks for an image's content in the archive once it is
	// hashed, and marks it a duplicate when found (steps.contentInArchive):
	// for a file hashed while it was sent (finishHash).
	inArchive func(context.Context, *state.Image) (bool, error)
}

// progressSink hears how far an image's hash and uploads are, for status
// and the live display; the Pipeline keeps it with the image's worker.
type progressSink interface {
	hashProgress(id uint64, n, total int64)
	setProgress(img *state.Image, sent, total int64)
	addProgress(id uint64, n int64)
}

// stepUpload sends every upload of the item not yet Completed, building
// its spool files (ZIPs, JSON files) first when they are missing.
func (ul *uploader) stepUpload(ctx context.Context, img *state.Image) error {
	if err := ul.ensureSpools(ctx, img); err != nil {
		return err
	}
	if img.State != state.Uploading {
		return nil // went back to pending
	}
	if joined, err := ul.joinedFile(img); err != nil || joined != "" {
		if err != nil {
			return err
		}
		return ul.backToPending(ctx, img, joined)
	}
	if len(img.Uploads) == 0 {
		return ul.save(img, func(r *state.Image) { r.State, r.ItemIntentAt = state.Uploaded, ul.cfg.Now().UTC() })
	}
	var total, sent int64
	for _, u := range img.Uploads {
		total += u.Size
		if u.Completed {
			sent += u.Size
		}
	}
	ul.progress.setProgress(img, sent, total)
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
			return ul.backToPending(ctx, img, changed)
		}
		if err := ul.uploadOne(ctx, img, i); err != nil {
			if errors.Is(err, errInArchive) {
				return nil // a duplicate now: what follows is its after_upload
			}
			var ce *changedError
			if errors.As(err, &ce) {
				// Stopped before the complete: the stale upload is still
				// Initialized, and backToPending aborts it (it is ours).
				return ul.backToPending(ctx, img, ce.file)
			}
			return err
		}
		changed, err = changedFile(img, "during upload")
		if err != nil {
			return err
		}
		if changed == "" {
			changed, err = ul.joinedFile(img)
			if err != nil {
				return err
			}
		}
		if changed != "" {
			return ul.backToPending(ctx, img, changed)
		}
	}
	return nil
}

// uploadOne sends upload i of img, creating or resuming it.
//
// Every upload's pk is committed before its first byte is sent, one-part
// uploads too, and each part as it is accepted, so a restart resumes (or,
// on failure, aborts) exactly the uploads this agent created and nothing
// else on the account: another agent may be sending a file of the same
// name with the same token.
//
// A create whose answer never arrived (a crash, or gcapi.ErrAmbiguous: a
// 5xx or broken connection after the request was sent) is not repeated in
// place and not looked for: the next attempt creates a new upload. The
// stray one, if the server made it, is not ours to abort (we never learnt
// its pk, and an upload of the same name may be someone else's); the
// server deletes uploads left Initialized after 24 hours (grand-challenge.org
// app/grandchallenge/uploads/tasks.py, delete_old_user_uploads).
//
// The last upload's completion is not committed: the server's upload status
// is the truth a restart asks for, and the "uploaded" state is committed
// with the item intent.
func (ul *uploader) uploadOne(ctx context.Context, img *state.Image, i int) error {
	u := img.Uploads[i]
	f, err := ul.openUpload(img, u)
	if err != nil {
		return err
	}
	defer f.Close()
	partSize := u.PartSize
	if partSize <= 0 {
		partSize = gcapi.DefaultPartSize
	}
	fu := gcapi.FileUpload{
		Filename:        uploadName(u.Filename),
		Body:            f,
		Size:            u.Size,
		PartSize:        partSize,
		PartConcurrency: ul.cfg.PartConcurrency,
		OnCreated: func(up *gcapi.Upload) error {
			return ul.save(img, func(r *state.Image) {
				ru := &r.Uploads[i]
				ru.PK, ru.S3UploadID, ru.APIURL, ru.Created = up.PK, up.S3UploadID, up.APIURL, up.Created
				ru.Parts = nil
			})
		},
		OnPart: func(part gcapi.Part) error {
			// A file that changes while it is sent must not have its
			// upload completed: checked after every part, so the last
			// part's check comes before the complete.
			if changed, err := changedFile(img, "during upload"); err != nil {
				return err
			} else if changed != "" {
				return &changedError{file: changed}
			}
			if u.Size <= partSize {
				// The only part: the complete follows at once, and a
				// resume lists the parts the server holds (and checks the
				// file is still the one hashed), so a commit here would
				// cost an fsync per image and save nothing.
				return nil
			}
			return ul.save(img, func(r *state.Image) {
				ru := &r.Uploads[i]
				ru.Parts = slices.DeleteFunc(ru.Parts, func(q state.Part) bool { return q.Number == part.PartNumber })
				ru.Parts = append(ru.Parts, state.Part{Number: part.PartNumber, ETag: part.ETag, Size: part.Size})
			})
		},
		Progress: func(n int64) { ul.progress.addProgress(img.ID, n) },
	}
	unhashed := slices.IndexFunc(img.Files, func(r state.File) bool { return r.Path == u.Path && r.SHA256 == "" && len(u.ZipOf) == 0 })
	var hash *runningHash
	if unhashed >= 0 {
		// Hashed from the same handle while the parts go (hashWhileSent).
		hash = startHash(ctx, f)
		defer hash.stop()
		fu.BeforeComplete = func(ctx context.Context) error { return ul.finishHash(ctx, img, unhashed, hash) }
	}
	if u.PK != "" {
		fu.Resume = &gcapi.Upload{PK: u.PK, S3UploadID: u.S3UploadID, APIURL: u.APIURL, Filename: fu.Filename, Status: gcapi.UploadInitialized}
		for _, q := range u.Parts {
			fu.Done = append(fu.Done, gcapi.Part{PartNumber: q.Number, ETag: q.ETag, Size: q.Size})
		}
	}
	done, err := ul.api.UploadFile(ctx, fu)
	if err == nil && unhashed >= 0 && img.Files[unhashed].SHA256 == "" {
		// Completed in an earlier run (BeforeComplete commits the hash
		// before the complete, so only a record older than that): hashed
		// here, and looked for in the archive before its item is made.
		err = ul.finishHash(ctx, img, unhashed, hash)
	}
	if errors.Is(err, errInArchive) {
		// Marked a duplicate: its item holds this content already. The
		// parts sent are dropped (best effort: the server deletes an
		// upload left behind after a day).
		if aerr := ul.abortOpen(ctx, img); aerr != nil {
			ul.log.Warn("aborting the upload of content already in the archive", "id", img.ID, "file", u.Path, "err", aerr)
		}
		return errInArchive
	}
	if err != nil {
		return fmt.Errorf("upload %s: %w", u.Path, err)
	}
	ru := &img.Uploads[i]
	ru.PK, ru.S3UploadID, ru.APIURL, ru.Completed = done.PK, done.S3UploadID, done.APIURL, true
	if i == len(img.Uploads)-1 {
		// Committed with the item pk. A restart before that commit finds
		// no item intent after its start and looks the title up first.
		img.State, img.ItemIntentAt = state.Uploaded, ul.cfg.Now().UTC()
		return nil
	}
	uploads := cloneUploads(img.Uploads)
	return ul.save(img, func(r *state.Image) { r.Uploads = uploads })
}

// openUpload opens what upload u sends. A source file is opened once,
// without following a symbolic link, and must be, on the open handle, the
// file that was hashed (size, modification time, device, inode and change
// time): every byte sent is read from that handle, so a file renamed over
// it, or swapped for a link to something else, is never sent. A spool file
// (a ZIP, a JSON value) is the agent's own.
func (ul *uploader) openUpload(img *state.Image, u state.Upload) (*os.File, error) {
	for _, rec := range img.Files {
		if rec.Path != u.Path || len(u.ZipOf) > 0 {
			continue
		}
		f, fi, err := openSource(u.Path, "before upload")
		if err != nil {
			return nil, err
		}
		if !sameAsHashed(fi, rec) {
			f.Close()
			return nil, &changedError{file: u.Path}
		}
		return f, nil
	}
	f, err := os.Open(u.Path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, inputErrorf("%s was deleted before upload", u.Path)
		}
		return nil, fmt.Errorf("open %s: %w", u.Path, err)
	}
	return f, nil
}

func cloneUploads(in []state.Upload) []state.Upload {
	out := slices.Clone(in)
	for i := range out {
		out[i].Parts = slices.Clone(out[i].Parts)
	}
	return out
}

// backToPending abandons the uploads of an image whose file changed after
// it was hashed; the image is hashed again.
func (ul *uploader) backToPending(ctx context.Context, img *state.Image, changed string) error {
	ul.log.Info("file changed after it was hashed; hashing it again", "id", img.ID, "file", changed)
	if err := ul.abortOpen(ctx, img); err != nil {
		return err
	}
	removeSpools(img)
	return ul.save(img, func(r *state.Image) {
		r.State, r.Uploads, r.Values = state.Pending, nil, nil
	})
}

// abortOpen aborts the image's uploads that are still Initialized, so that
// no multipart upload is left open. It asks the server first: aborting an
// upload that is not Initialized is a server error.
func (ul *uploader) abortOpen(ctx context.Context, img *state.Image) error {
	for _, u := range img.Uploads {
		if u.PK == "" || u.Completed {
			continue // never created (or its answer never came: not ours to touch), or consumed by the import
		}
		cur, err := ul.api.Upload(ctx, u.PK)
		if gcapi.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("check upload %s of %s before aborting: %w", u.PK, u.Path, err)
		}
		if cur.Status != gcapi.UploadInitialized {
			continue
		}
		if _, err := ul.api.AbortUpload(ctx, cur); err != nil && !gcapi.IsNotFound(err) {
			return fmt.Errorf("abort upload %s of %s: %w", u.PK, u.Path, err)
		}
	}
	return nil
}
