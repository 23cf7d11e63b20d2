package gcapitest

import (
	"fmt"
	"path"
	"strconv"
	"strings"
)

// Where stored files live under /media/, as the real server lays them out
// and serves them.

// imageFileURL is the URL an image's stored file is listed with: the
// ImageFile's storage name (grand-challenge.org
// app/grandchallenge/cases/models.py image_file_path:
// images/<pk[0:2]>/<pk[2:4]>/<image pk>/<image file pk>/<file name>) under
// the media root.
func (s *Server) imageFileURL(im *image, name string) string {
	return s.URL + "/media/" + imageFileKey(im, name)
}

func imageFileKey(im *image, name string) string {
	return "images/" + im.pk[0:2] + "/" + im.pk[2:4] + "/" + im.pk + "/" + im.filePK + "/" + name
}

// imageFileName is the name the stored file of an image has: "<image pk>"
// and the suffix of its type (panimg models.py PanImgFile: "<pk>.mha" for
// MHD, "<pk>.tif" for TIFF).
func imageFileName(im *image) string {
	if im.typ == "TIFF" {
		return im.pk + ".tif"
	}
	return im.pk + ".mha"
}

// civFileKey is a file value's storage name (components/models.py
// component_interface_value_path: components/componentinterfacevalue/
// <last 4 hex digits of the pk, in two folders>/<pk>/<file name>).
func civFileKey(v *civ) string {
	h := fmt.Sprintf("%04x", v.pk)
	return "components/componentinterfacevalue/" + h[len(h)-4:len(h)-2] + "/" + h[len(h)-2:] + "/" + strconv.Itoa(v.pk) + "/" + v.file.name
}

// mediaBlobLocked finds the stored bytes behind a path under /media/ (split
// at "/"), or nil. Image files are served on both routes of serve_images
// (serving/urls.py: images/<uuid:pk>/<path:path> and
// images/<prefix:pa>/<prefix:pb>/<uuid:pk>/<path:path>), whose storage
// name is the document root joined with the normalised path
// (serving/views.py serve_images: posixpath.normpath, safe_join); a name
// that is not a stored file is a 404 (protected_storage_redirect). File
// values are served on
// components/componentinterfacevalue/<pa>/<pb>/<int:pk>/<path:path>
// (serve_component_interface_value), by the value's pk.
func (s *Server) mediaBlobLocked(parts []string) *blob {
	if len(parts) < 3 {
		return nil
	}
	switch parts[0] {
	case "images":
		var pk, rest string
		var root string
		switch {
		case isUUID(parts[1]):
			pk, rest, root = parts[1], strings.Join(parts[2:], "/"), "images/"+parts[1]
		case len(parts) >= 5 && isHex2(parts[1]) && isHex2(parts[2]) && isUUID(parts[3]):
			pk, rest, root = parts[3], strings.Join(parts[4:], "/"), strings.Join(parts[:4], "/")
		default:
			return nil
		}
		im := s.st.images[pk]
		if im == nil || im.content == nil || im.dicomSet != nil {
			return nil
		}
		name := strings.TrimLeft(path.Clean("/"+rest), "/")
		if root+"/"+name != imageFileKey(im, imageFileName(im)) {
			return nil
		}
		return im.content
	case "components":
		if len(parts) < 6 || parts[1] != "componentinterfacevalue" || !isHex2(parts[2]) || !isHex2(parts[3]) {
			return nil
		}
		n, err := strconv.Atoi(parts[4])
		if err != nil {
			return nil
		}
		v := s.st.civs[n]
		if v == nil || v.file == nil || strings.Join(parts, "/") != civFileKey(v) {
			return nil
		}
		return v.file
	}
	return nil
}

// isUUID reports whether s is a UUID as Django's <uuid:> converter matches
// it (lower-case hex, 8-4-4-4-12).
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// isHex2 matches serving/urls.py's PrefixConverter: two hex digits.
func isHex2(s string) bool {
	if len(s) != 2 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
