package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gcingest/gcingest/complete"
	"github.com/gcingest/gcingest/dicom"
	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/ingest/group"
	"github.com/gcingest/gcingest/state"
)

// stepHash reads every file once: sizes, times, SHA-256, and plans the
// uploads.
func (ul *uploader) stepHash(ctx context.Context, img *state.Image) error {
	w, err := ul.watchOf(img)
	if err != nil {
		return err
	}
	files := slices.Clone(img.Files)
	joined := fingerprint(img.Joined)
	if len(img.Joined) > 0 {
		// The group's files changed before it reached its item: plan it
		// with the files as they are now.
		files = slices.Clone(img.Joined)
	}
	if w.Deidentify && !group.IsDICOMKey(img.Key) {
		for _, f := range files {
			if err := refuseRawDICOM(f.Path); err != nil {
				return err
			}
		}
	}
	var gathered map[string]string
	if group.IsDICOMKey(img.Key) {
		if files, gathered, err = ul.plan.gatherSeries(img, w, files); err != nil {
			return err
		}
	}
	var total int64
	for _, f := range files {
		total += f.Size
	}
	read := func(n int64) { ul.progress.hashProgress(img.ID, n, total) }
	whileSent := ul.hashWhileSent(img, files, gathered)
	for i := range files {
		f := &files[i]
		var sum string
		var fi os.FileInfo
		if whileSent {
			// Proven complete and stat'ed now; hashed while its parts go
			// (uploadOne), so the first byte leaves at once.
			fi, err = proveSource(f.Path)
		} else {
			sum, fi, err = hashSource(ctx, f.Path, read)
		}
		var ce *changedError
		if errors.As(err, &ce) {
			ul.log.Info("file changed while it was read; reading it again shortly", "id", img.ID, "file", f.Path)
			return &waitError{at: ul.cfg.Now().Add(2 * time.Second)}
		}
		if err != nil {
			return err
		}
		if sent, ok := gathered[f.Path]; ok && sent != sum {
			return inputErrorf("DICOM series %s: %s, sent before to this series' item, changed since; not sending the series again "+
				"with it (put the file as it was back, or remove it, and run 'gcingest retry %d')", seriesName(img), f.Path, img.ID)
		}
		f.Size, f.ModTime, f.SHA256, f.Ident = fi.Size(), fi.ModTime().UTC(), sum, fileIdent(fi)
	}
	if err := proveMHDPairs(files); err != nil {
		return err
	}
	deid, err := ul.plan.deidentifies(ctx, img, w)
	if err != nil {
		return err
	}
	var secret []byte
	if deid {
		if secret, err = ul.secret.get(); err != nil {
			return err
		}
	}
	// Under deidentify the whole watch's titles name no paths, not only
	// its DICOM's: config refuses such templates there.
	title, err := renderTitle(w.Title, img.Key, files, secret, deid || w.Deidentify)
	if err != nil {
		return err
	}
	if whileSent {
		title = "" // rendered once the hash it may carry is known (finishHash)
	}
	values, uploads, itemPK, err := ul.plan.item(ctx, img, w, files, secret)
	var ce *changedError
	if errors.As(err, &ce) {
		ul.log.Info("file changed while it was read; reading it again shortly", "id", img.ID, "file", ce.file)
		return &waitError{at: ul.cfg.Now().Add(2 * time.Second)}
	}
	if err != nil {
		return err
	}
	now := ul.cfg.Now().UTC()
	// Committed with the first upload's pk (or the item intent), not on
	// its own: an fsync per image saved, and a crash before it only means
	// hashing again.
	ul.saveLater(img, func(r *state.Image) {
		r.Files, r.Title, r.Uploads, r.Values = files, title, uploads, values
		if fingerprint(r.Joined) == joined {
			r.Joined = nil // planned with them; newer ones wait for the next hash
		}
		if itemPK != "" || r.TargetItem {
			r.ItemPK = itemPK
		}
		r.TargetItem = itemPK != ""
		r.State = state.Uploading
		if len(uploads) == 0 {
			// JSON values only: nothing to upload.
			r.State, r.ItemIntentAt = state.Uploaded, now
		}
	})
	return nil
}

// hashWhileSent reports whether img's files are hashed while they are sent
// rather than before: a lone image file of more than one part (issue 22:
// a 2 GiB file waited 1.7 s for its hash before its first byte left).
// Nothing needed before the first byte depends on its hash: the title
// that carries it and the look for the same content in the archive come
// before the upload's complete (finishHash), and the hash, read from disk
// faster than the parts are sent, is ready by then. A DICOM series, a ZIP,
// an .mhd pair or a folder is hashed first: their plans (de-identified
// names, ZIP names, files sent before) depend on the hashes.
func (ul *uploader) hashWhileSent(img *state.Image, files []state.File, gathered map[string]string) bool {
	if Kind(img.Kind) != KindSingle || len(files) != 1 || group.IsDICOMKey(img.Key) || gathered != nil {
		return false
	}
	partSize := ul.cfg.PartSize
	if partSize <= 0 {
		partSize = gcapi.DefaultPartSize
	}
	return files[0].Size > max(partSize, gcapi.MinPartSize)
}

// proveSource opens name as hashSource does and runs the same checks (not
// empty, complete by its format's proof), without reading it whole: for a
// file hashed while it is sent.
func proveSource(name string) (os.FileInfo, error) {
	f, fi, err := openSource(name, "before upload")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi.Size() == 0 {
		return nil, inputErrorf("%s is empty (0 bytes); nothing to upload", name)
	}
	if err := proveComplete(f, fi.Size(), name); err != nil {
		return nil, err
	}
	return fi, nil
}

// refuseRawDICOM fails a file that is or claims to be DICOM (the DICM
// magic, or a DICOM name) but did not reach the pipeline as part of a
// DICOM series, on a watch that de-identifies: only a series is
// de-identified, so such a file would leave with its headers as they are.
// The grouper makes one of a file it cannot read (a structure the parser
// does not follow, a cut file): the reason says why.
func refuseRawDICOM(name string) error {
	f, _, err := openSource(name, "before upload")
	if err != nil {
		return err
	}
	defer f.Close()
	ext := strings.ToLower(filepath.Ext(name))
	var magic [132]byte
	n, _ := f.ReadAt(magic[:], 0)
	isMagic := n == len(magic) && string(magic[128:]) == "DICM"
	if !isMagic && ext != ".dcm" && ext != ".dicom" && ext != ".ima" {
		return nil
	}
	why := "it was not grouped as a DICOM series"
	if _, err := dicom.Verify(f); err != nil {
		why = "it cannot be read as DICOM: " + err.Error()
	} else if !isMagic {
		why = "it has no DICM magic at offset 128"
	}
	return inputErrorf("%s looks like DICOM, but %s; with deidentify = true only a DICOM series that reads whole is sent, "+
		"de-identified, so nothing of this file was sent (fix or re-export the file, or remove it from the drop folder)", name, why)
}

// zipName is the upload filename of a group sent as one ZIP: a hash of its
// files' paths and contents, or, when its DICOM is de-identified (secret
// set), the series' keyed hash (seriesTitleHash): a plain hash of the
// original bytes would let anyone holding the originals find the upload.
func zipName(key string, files []state.File, secret []byte) string {
	if secret != nil && group.IsDICOMKey(key) {
		return "image-" + seriesTitleHash(key, secret) + ".zip"
	}
	return "image-" + titleHash(files) + ".zip"
}

// hashSource reads the file at name once, through one handle opened
// without following a symbolic link, and returns its SHA-256 and the
// handle's stat from before the read. A file that changed while it was
// read, or whose name no longer leads to the handle's file, is a
// *changedError.
//
// read, when not nil, is told of the bytes read as they are.
func hashSource(ctx context.Context, name string, read func(n int64)) (string, os.FileInfo, error) {
	f, before, err := openSource(name, "before upload")
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	if before.Size() == 0 {
		return "", nil, inputErrorf("%s is empty (0 bytes); nothing to upload", name)
	}
	if err := proveComplete(f, before.Size(), name); err != nil {
		return "", nil, err
	}
	sum, err := hashOpenTo(ctx, f, read)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return "", nil, inputErrorf("cannot read %s: permission denied", name)
		}
		return "", nil, err
	}
	after, err := f.Stat()
	if err != nil {
		return "", nil, fmt.Errorf("stat %s: %w", name, err)
	}
	named, err := os.Lstat(name)
	if err != nil || after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) ||
		fileIdent(after) != fileIdent(before) || !os.SameFile(named, after) {
		return "", nil, &changedError{file: name}
	}
	return sum, before, nil
}

// proveComplete runs the completeness proof of f's format (package
// complete) on the handle that is hashed: the grouper waited while the
// proof failed, and lets an image go on only after IncompleteWait, so a
// failing proof here fails the image, naming the file and both sizes. A
// format without a proof passes: settle times are all there is for it.
// A gzip stream (.nii.gz, gzip NRRD) is proven by its trailer's size, not
// inflated: inflating runs at a twentieth of the hash's speed
// (BenchmarkHash), and its CRC tells corruption, which the server's
// import reports, not a file still being written.
func proveComplete(f *os.File, size int64, name string) error {
	err := complete.Check(f, size, name)
	if err == nil || errors.Is(err, complete.ErrNoProof) {
		return nil
	}
	return incomplete(name, err)
}

// incomplete turns a proof's verdict on the file at name into the image's
// failure; a read error stays what it is.
func incomplete(name string, err error) error {
	var ie *complete.IncompleteError
	var oe *complete.OverlongError
	var fe *complete.FormatError
	switch {
	case errors.As(err, &ie):
		return inputErrorf("%s is %v; nothing of its image was sent (copy the file again, whole)", name, err)
	case errors.As(err, &oe), errors.As(err, &fe):
		return inputErrorf("%s is %v; nothing of its image was sent", name, err)
	}
	return fmt.Errorf("prove %s complete: %w", name, err)
}

// proveMHDPairs proves the data file of each .mhd among files complete by
// the header's size (complete.CheckMHD): the data file's own bytes say
// nothing of its length.
func proveMHDPairs(files []state.File) error {
	byPath := make(map[string]state.File, len(files))
	for _, f := range files {
		byPath[f.Path] = f
	}
	for _, f := range files {
		if !strings.EqualFold(filepath.Ext(f.Path), ".mhd") {
			continue
		}
		hf, _, err := openSource(f.Path, "before upload")
		if err != nil {
			return err
		}
		h, err := complete.ParseMetaImage(io.NewSectionReader(hf, 0, f.Size))
		if err != nil || h.Local() {
			hf.Close()
			continue // an .mhd with LOCAL data was proven as it was hashed
		}
		data, ok := byPath[filepath.Join(filepath.Dir(f.Path), filepath.FromSlash(h.DataFile))]
		if !ok {
			hf.Close()
			continue // a LIST or a pattern: no proof here
		}
		err = complete.CheckMHD(hf, f.Size, data.Size)
		hf.Close()
		if err != nil && !errors.Is(err, complete.ErrNoProof) {
			return incomplete(data.Path, err)
		}
	}
	return nil
}

// statFile stats name itself, not what a symbolic link points to: a file
// swapped for a link is not a regular file.
func statFile(name, when string) (os.FileInfo, error) {
	fi, err := os.Lstat(name)
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

// changedFile returns the first source file that is not what was hashed
// (size, modification time and, where known, device, inode and change
// time), or "" when none is.
func changedFile(img *state.Image, when string) (string, error) {
	for _, f := range img.Files {
		fi, err := statFile(f.Path, when)
		if err != nil {
			return "", err
		}
		if !sameAsHashed(fi, f) {
			return f.Path, nil
		}
	}
	return "", nil
}
