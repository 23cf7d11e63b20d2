package state

import (
	"strconv"
	"unicode/utf8"
)

// File names are bytes on most systems, not necessarily valid UTF-8, and
// JSON strings are UTF-8: encoding/json turns each invalid byte into
// U+FFFD, and a name read back would name no file. So every name-holding
// string of a record that is not valid UTF-8 is also kept, as bytes
// (base64 in JSON), in Image.RawNames, under the field's place, and put
// back when the record is read.

// names returns the record's name-holding strings by place.
func names(img *Image) map[string]*string {
	m := map[string]*string{"watch": &img.Watch, "key": &img.Key, "moved_to": &img.MovedTo}
	for i := range img.Files {
		f := &img.Files[i]
		m["files."+strconv.Itoa(i)+".rel"], m["files."+strconv.Itoa(i)+".path"] = &f.Rel, &f.Path
	}
	for i := range img.Joined {
		f := &img.Joined[i]
		m["joined."+strconv.Itoa(i)+".rel"], m["joined."+strconv.Itoa(i)+".path"] = &f.Rel, &f.Path
	}
	for i := range img.Uploads {
		u := &img.Uploads[i]
		m["uploads."+strconv.Itoa(i)+".path"] = &u.Path
		for j := range u.ZipOf {
			m["uploads."+strconv.Itoa(i)+".zip_of."+strconv.Itoa(j)] = &u.ZipOf[j]
		}
	}
	for i := range img.Values {
		for j := range img.Values[i].Files {
			m["values."+strconv.Itoa(i)+".files."+strconv.Itoa(j)] = &img.Values[i].Files[j]
		}
	}
	return m
}

// keepRawNames fills img.RawNames before img is encoded.
func keepRawNames(img *Image) {
	img.RawNames = nil
	for place, s := range names(img) {
		if !utf8.ValidString(*s) {
			if img.RawNames == nil {
				img.RawNames = map[string][]byte{}
			}
			img.RawNames[place] = []byte(*s)
		}
	}
}

// restoreRawNames puts the raw names back after img was decoded.
func restoreRawNames(img *Image) {
	if len(img.RawNames) == 0 {
		return
	}
	m := names(img)
	for place, b := range img.RawNames {
		if s, ok := m[place]; ok {
			*s = string(b)
		}
	}
}
