package ingest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/gcingest/gcingest/gcapi"
)

// maxUploadName is the server's limit on an upload's filename
// (grand-challenge.org app/grandchallenge/uploads/models.py,
// UserUpload.filename, max_length=128); gcapi counts it in bytes.
const maxUploadName = 128

// uploadName returns the filename to send for a file named name: name
// itself when the server takes it, else a shortened, valid UTF-8 name that
// keeps the extension (".nii.gz" whole: the server picks the image builder
// by it) and ends the stem with a hash of the full name, so that names
// unique within an item stay unique. It is deterministic: a resumed upload
// gets the same name.
func uploadName(name string) string {
	if len(name) <= maxUploadName && utf8.ValidString(name) {
		return name
	}
	ext := ""
	lower := strings.ToLower(name)
	switch {
	case strings.HasSuffix(lower, ".nii.gz"):
		ext = name[len(name)-len(".nii.gz"):]
	default:
		if i := strings.LastIndexByte(name, '.'); i > 0 && len(name)-i <= 16 {
			ext = name[i:]
		}
	}
	if !utf8.ValidString(ext) {
		ext = ""
	}
	stem := strings.ToValidUTF8(name[:len(name)-len(ext)], "_")
	sum := sha256.Sum256([]byte(name))
	tag := "-" + hex.EncodeToString(sum[:4])
	room := maxUploadName - len(ext) - len(tag)
	for len(stem) > room {
		_, n := utf8.DecodeLastRuneInString(stem)
		stem = stem[:len(stem)-n]
	}
	return stem + tag + ext
}

// s3Transient reports whether err is S3 refusing a part PUT for a reason
// that a later attempt heals: 400 RequestTimeout (the body came too
// slowly) or 400 ExpiredToken (the presigning credentials expired; a new
// attempt gets a new URL).
func s3Transient(err error) bool {
	var ge *gcapi.Error
	if !errors.As(err, &ge) || ge.StatusCode != http.StatusBadRequest {
		return false
	}
	return strings.HasPrefix(ge.Message, "RequestTimeout") || strings.HasPrefix(ge.Message, "ExpiredToken")
}

// s3TransientError is an S3 refusal that waiting heals. It deliberately
// does not unwrap to the *gcapi.Error (a 400, which would read as
// permanent), so the image is retried.
type s3TransientError struct{ err error }

func (e *s3TransientError) Error() string {
	return e.err.Error() + " (S3 refusal that a new attempt heals)"
}
