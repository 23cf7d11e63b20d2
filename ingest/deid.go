package ingest

import (
	"archive/zip"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/gcingest/gcingest/dicom"
	"github.com/gcingest/gcingest/durable"
	"github.com/gcingest/gcingest/ingest/group"
	"github.com/gcingest/gcingest/state"
)

// SecretFile is the name of the installation's de-identification secret,
// kept beside the state file (the parent of the spool folder), never inside
// it: the new UIDs are a keyed hash of the originals under it, so a lost
// state file re-finds the same series with the same UIDs, while the secret
// never travels with a copy of the state file.
const SecretFile = "dicom-deid.secret"

// secretLen is the size of a new secret.
const secretLen = 32

// SecretPath is where the pipeline keeps the de-identification secret.
func (cfg PipelineConfig) SecretPath() string {
	return filepath.Join(filepath.Dir(cfg.SpoolDir), SecretFile)
}

// LoadSecret reads the de-identification secret at name, creating it (32
// random bytes, mode 0600, written durably) the first time. It is never
// replaced once there: a new secret would give every series new UIDs.
func LoadSecret(name string) ([]byte, error) {
	b, err := os.ReadFile(name)
	if err == nil {
		if len(b) < secretLen {
			return nil, fmt.Errorf("de-identification secret %s holds %d bytes, want %d; restore it from a backup "+
				"(deleting it gives every series new UIDs, and so new items)", name, len(b), secretLen)
		}
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read de-identification secret %s: %w", name, err)
	}
	secret := make([]byte, secretLen)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("make de-identification secret: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return nil, fmt.Errorf("make folder for de-identification secret %s: %w", name, err)
	}
	// Written to a temporary file and linked into place: a crash leaves no
	// half secret, and a second writer's link fails rather than replacing a
	// secret already in use.
	tmp := name + ".new"
	if err := durable.WriteFile(tmp, secret, 0o600); err != nil {
		return nil, fmt.Errorf("write de-identification secret %s: %w", name, err)
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, name); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("put de-identification secret in place at %s: %w", name, err)
	}
	b, err = os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read de-identification secret %s: %w", name, err)
	}
	return b, nil
}

// seriesTitleHash is what {hash} is in the title of a DICOM group's item:
// 12 hex digits of a SHA-256 over the group key (folder, study, stack or
// series, SOP class), so the item is found again when a late file brings
// the series back with more files, or after the state file is lost. For a
// de-identified group it is an HMAC keyed with the installation's secret
// (the one that maps its UIDs): the key holds the original UIDs, and an
// unkeyed hash of them would link the item to the study for anyone who
// holds them.
func seriesTitleHash(key string, secret []byte) string {
	msg := []byte("gcingest dicom series\x00" + key)
	if secret == nil {
		sum := sha256.Sum256(msg)
		return hex.EncodeToString(sum[:])[:12]
	}
	m := hmac.New(sha256.New, secret)
	m.Write(msg)
	return hex.EncodeToString(m.Sum(nil))[:12]
}

// deidSecret is the installation's de-identification secret, read (or
// made) once per run: it never changes under a running agent. A failed
// read is not kept: the next image asks again.
type deidSecret struct {
	path string // PipelineConfig.SecretPath

	mu sync.Mutex
	b  []byte // nil until read
}

// get returns the secret, reading or making it the first time.
func (s *deidSecret) get() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b == nil {
		b, err := LoadSecret(s.path)
		if err != nil {
			return nil, err
		}
		s.b = b
	}
	return s.b, nil
}

// LogDeidentification says at start-up, once per watch, whether its DICOM
// leaves the machine de-identified or with its headers as they are.
func LogDeidentification(log *slog.Logger, w Watch) {
	if w.Deidentify {
		log.Info("DICOM is de-identified here before upload, with Grand Challenge's de-identification procedure; "+
			"SOP classes it has no rules for and 4D sets are refused", "deidentify", true)
		return
	}
	log.Info("deidentify is off: DICOM headers are sent as they are (the server drops them when it converts the images; "+
		"sockets of kind DICOM Image Set are always de-identified); set deidentify = true to keep them here", "deidentify", false)
}

// KindDICOMImageSet is the socket kind whose images are DICOM image sets
// (grand-challenge.org app/grandchallenge/components/models.py).
const KindDICOMImageSet = "DICOM Image Set"

// writeSpoolZip builds the ZIP of upload files at name. For a DICOM group
// every file is read to its end first (a cut file fails the group, named),
// and, when the group is de-identified, each entry is the file rewritten by
// Grand Challenge's procedure: those bytes are what is spooled, hashed (the
// upload's size and the ZIP) and sent; the originals never leave. The ZIP is
// written to a temporary file and renamed (a failed rewrite leaves
// nothing), and built once per upload: deflated data sets come out of the
// rewriter differently across Go versions, so a resumed upload must send the
// spooled bytes, not a rebuilt ZIP.
func (ul *uploader) writeSpoolZip(ctx context.Context, img *state.Image, name string, files []state.File) (int64, error) {
	if !group.IsDICOMKey(img.Key) {
		return writeZip(ctx, name, files)
	}
	w, err := ul.watchOf(img)
	if err != nil {
		return 0, err
	}
	deid, err := ul.plan.deidentifies(ctx, img, w)
	if err != nil {
		return 0, err
	}
	var d *dicom.Deidentifier
	if deid {
		secret, err := ul.secret.get()
		if err != nil {
			return 0, err
		}
		// One Series UID for the whole group, derived from its key, so the
		// files still form one image on the server after the rewrite.
		d, err = dicom.NewDeidentifier(secret, dicom.WithSeriesKey(img.Key))
		if err != nil {
			return 0, err
		}
	}
	for _, f := range files {
		if err := checkDICOM(ctx, f, deid); err != nil {
			return 0, err
		}
	}
	switch {
	case strings.HasSuffix(name, dicomSetFile) && len(files) == 1:
		// One file of a DICOM image set (planner.dicomSet), always de-identified.
		if d == nil {
			return 0, fmt.Errorf("%s: a DICOM image set file planned without de-identification", img.Key)
		}
		return writeDeidFile(ctx, d, name, files[0])
	case !deid:
		return writeZip(ctx, name, files)
	}
	return writeDeidZip(ctx, d, name, files)
}

// checkDICOM reads f to its end: a file cut short (or not DICOM this
// reader can follow) fails its group with the file named. With deid it
// also refuses a 4D set, which the procedure cannot keep together.
func checkDICOM(ctx context.Context, f state.File, deid bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r, _, err := openSource(f.Path, "before upload")
	if err != nil {
		return err
	}
	defer r.Close()
	h, err := dicom.Verify(r)
	var fe *dicom.FormatError
	switch {
	case errors.Is(err, dicom.ErrTruncated):
		return inputErrorf("DICOM file %s is truncated: %v; its series was not sent (copy the file again, whole)", f.Path, err)
	case errors.As(err, &fe):
		return inputErrorf("DICOM file %s cannot be read: %v; its series was not sent", f.Path, err)
	case err != nil:
		return fmt.Errorf("read DICOM file %s: %w", f.Path, err)
	}
	if deid && h.HasStackID {
		return inputErrorf("DICOM file %s is part of a 4D set (StackID %q): Grand Challenge's de-identification procedure removes "+
			"StackID (0020,9056) and TemporalPositionIndex (0020,9128), which the server needs to build one 4D image, so it "+
			"cannot be sent de-identified; send it to an image socket on a watch without deidentify", f.Path, h.StackID)
	}
	return nil
}

// writeDeidZip writes the files, each rewritten by d, into a ZIP at name
// as writeZip lays it out. Entries are numbered, not named: file names from
// a scanner or PACS export can hold the patient's name or ID.
func writeDeidZip(ctx context.Context, d *dicom.Deidentifier, name string, files []state.File) (int64, error) {
	return writeZipWith(ctx, name, files, func(zw *zip.Writer, i int, sf state.File) error {
		return deidOne(zw, d, sf, fmt.Sprintf("%04d.dcm", i+1))
	})
}

// deidOne stores sf in zw as entry, rewritten by d, with zipOne's fixed time and mode.
func deidOne(zw *zip.Writer, d *dicom.Deidentifier, sf state.File, entry string) error {
	hdr := &zip.FileHeader{Name: entry, Method: zip.Store, Modified: zipTime}
	hdr.SetMode(0o644)
	w, err := zw.CreateHeader(hdr)
	if err != nil {
		return fmt.Errorf("zip %s: %w", sf.Path, err)
	}
	src, _, err := openSource(sf.Path, "before upload")
	if err != nil {
		return err
	}
	defer src.Close()
	if _, err := d.Rewrite(w, src); err != nil {
		return deidErr(sf.Path, err)
	}
	return nil
}

// deidErr says why a file could not be de-identified: a rejection (with
// the procedure's reason) or an unreadable file fails the group, named.
func deidErr(name string, err error) error {
	var re *dicom.RejectError
	var fe *dicom.FormatError
	switch {
	case errors.As(err, &re):
		return inputErrorf("DICOM file %s not sent: %v", name, err)
	case errors.Is(err, dicom.ErrTruncated), errors.As(err, &fe):
		return inputErrorf("DICOM file %s cannot be de-identified: %v; its series was not sent", name, err)
	}
	return fmt.Errorf("de-identify %s: %w", name, err)
}

// dicomSetFile is the spool file extension of one de-identified DICOM file
// sent on its own (to a DICOM Image Set socket); writeSpoolZip writes such
// a file instead of a ZIP.
const dicomSetFile = ".dcm"

// writeDeidFile writes one file rewritten by d at name (temporary file,
// fsync, rename).
func writeDeidFile(ctx context.Context, d *dicom.Deidentifier, name string, sf state.File) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return 0, fmt.Errorf("make spool folder for %s: %w", name, err)
	}
	var size int64
	err := durable.Write(name, 0o600, func(f *os.File) error {
		src, _, err := openSource(sf.Path, "before upload")
		if err != nil {
			return err
		}
		defer src.Close()
		res, err := d.Rewrite(f, src)
		if err != nil {
			return deidErr(sf.Path, err)
		}
		size = res.Written
		return nil
	})
	if err != nil {
		return 0, err
	}
	return size, nil
}
