package group

import (
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/gcingest/gcingest/complete"
)

// classify decides what f is from its name and, where needed, its header.
// It runs again whenever f's size or modification time changes.
func (g *Grouper) classify(f *fileState) {
	name := path.Base(f.rel)
	ext := lowerExt(name)
	f.info = nil
	cls := classNone
	switch {
	case isLoneImageExt(ext) && complete.Supported(name):
		// A format whose header proves it complete: read that proof, again
		// whenever the file changes. A file that cannot be read goes on as
		// before, to fail in the pipeline naming it (DESIGN.md: a file that
		// cannot be read to its end fails its group after the settle time).
		cls = classImage
		g.readHeader(f, func(r *os.File, size int64) fileClass {
			if err := complete.Check(r, size, name); isVerdict(err) {
				f.info = &fileInfo{proof: err}
			}
			return classImage
		})
		if f.info != nil && f.info.proof == nil {
			f.info = nil
		}
	case isLoneImageExt(ext):
		cls = classImage
	case ext == ".raw" || ext == ".zraw":
		cls = classMHDData
	case ext == ".mrxs":
		cls = classMRXS
	case ext == ".mhd":
		cls = g.readHeader(f, func(r *os.File, size int64) fileClass {
			h, err := parseMHD(io.LimitReader(r, maxMHDLines*maxMHDLineSize))
			if err != nil {
				h.Unsupported = err.Error()
			}
			f.info = &fileInfo{mhd: h, proof: h.Cut}
			if h.Local {
				f.info.proof = h.checkData(size)
			}
			return classMHD
		})
	case ext == ".vms" || ext == ".vmu":
		cls = g.readHeader(f, func(r *os.File, size int64) fileClass {
			names, err := parseVMS(r)
			f.info = &fileInfo{companions: names}
			if err != nil {
				f.info = &fileInfo{err: err.Error()}
			}
			return classVMS
		})
	case strings.EqualFold(name, "Slidedat.ini"):
		cls = g.readHeader(f, func(r *os.File, size int64) fileClass {
			names, err := parseSlidedat(r)
			f.info = &fileInfo{companions: names}
			if err != nil {
				f.info = &fileInfo{err: err.Error()}
			}
			return classSlidedat
		})
	default:
		// Anything else may be DICOM, whatever its name (IM0001, .dcm, .DCM).
		cls = g.readHeader(f, func(r *os.File, size int64) fileClass {
			return classifyDICOM(f, r, size, ext)
		})
	}
	if cls == classNone {
		return // unreadable: f.info.err says why; read again next time
	}
	f.class, f.classSig = cls, f.cur
}

// readHeader opens f and hands it to read; an open failure leaves f
// unclassified with the reason.
func (g *Grouper) readHeader(f *fileState, read func(r *os.File, size int64) fileClass) fileClass {
	r, err := os.Open(filepath.Join(g.root, filepath.FromSlash(f.rel)))
	if err != nil {
		msg := err.Error()
		var pe *os.PathError
		if errors.As(err, &pe) {
			msg = pe.Err.Error()
		}
		f.info = &fileInfo{err: msg}
		return classNone
	}
	defer r.Close()
	return read(r, f.cur.size)
}

// classifyDICOM sniffs r for the DICOM magic and, when present, reads the
// header to its end.
func classifyDICOM(f *fileState, r io.ReaderAt, size int64, ext string) fileClass {
	isDCMName := ext == ".dcm" || ext == ".dicom" || ext == ".ima"
	if size < dicomPrefixLen {
		f.info = &fileInfo{err: "too short to tell"}
		return classUndetermined
	}
	var prefix [dicomPrefixLen]byte
	if n, err := r.ReadAt(prefix[:], 0); n < len(prefix) {
		f.info = &fileInfo{err: "read first bytes: " + errString(err)}
		return classUndetermined
	}
	if !isDICOMPrefix(prefix[:]) {
		if isDCMName {
			f.info = &fileInfo{err: "no DICM magic at offset 128"}
			return classDICOMBroken
		}
		return classUnknown
	}
	h, err := readDICOM(r, size)
	f.info = &fileInfo{dicom: h}
	switch {
	case err == nil:
		return classDICOM
	case truncated(err):
		f.info.err = err.Error()
		return classDICOMPartial
	default:
		f.info.err = err.Error()
		return classDICOMBroken
	}
}

func errString(err error) string {
	if err == nil {
		return "short read"
	}
	return err.Error()
}

// isVerdict reports whether err is package complete's verdict on a file
// (incomplete, overlong, broken, no proof) rather than a failure to read it.
func isVerdict(err error) bool {
	var (
		ie *complete.IncompleteError
		oe *complete.OverlongError
		fe *complete.FormatError
	)
	return errors.Is(err, complete.ErrNoProof) || errors.As(err, &ie) || errors.As(err, &oe) || errors.As(err, &fe)
}
