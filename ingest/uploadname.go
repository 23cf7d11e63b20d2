package ingest

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unicode/utf8"
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
