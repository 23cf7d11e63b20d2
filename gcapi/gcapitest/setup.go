package gcapitest

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
)

// Access is what the token's user may do with an archive. Permissions
// follow grand-challenge.org app/grandchallenge/archives/models.py
// (Archive.assign_permissions, ArchiveItem.assign_permissions).
type Access int

const (
	// AccessUpload: the user is an uploader (or editor): items can be
	// created (upload_archive) and changed (change_archiveitem).
	AccessUpload Access = iota
	// AccessView: the user is in the archive's users group: the archive
	// and its items are visible, but creating an item answers 400
	// {"archive":["Invalid hyperlink - Object does not exist."]}
	// (ArchiveItemPostSerializer filters archives by upload_archive) and
	// changing one 403.
	AccessView
	// AccessPublic: a public archive the user has no role in: everyone,
	// the anonymous user too, sees the archive (view_archive for the
	// registered-and-anonymous group), nobody sees its items, and item
	// creation answers 400 as for AccessView.
	AccessPublic
	// AccessNone: a private archive of others: invisible (404, absent
	// from lists).
	AccessNone
)

// AddArchive creates an archive the token's user may upload to.
func (s *Server) AddArchive(slug, title string) Archive {
	return s.AddArchiveAccess(slug, title, AccessUpload)
}

// AddArchiveAccess creates an archive with the given access for the
// token's user.
func (s *Server) AddArchiveAccess(slug, title string, access Access) Archive {
	s.mu.Lock()
	defer s.mu.Unlock()
	ar := &archive{pk: s.st.uuid(), slug: slug, title: title, access: access, key: s.st.orderKey()}
	s.st.archives[ar.pk] = ar
	return s.archiveJSON(ar)
}

// fileKindSuffix maps file socket kinds to the suffix of their relative_path.
func fileKindSuffix(kind string) string {
	return map[string]string{
		"CSV file": ".csv", "ZIP file": ".zip", "PDF file": ".pdf", "SQREG file": ".sqreg",
		"Thumbnail jpg": ".jpeg", "Thumbnail png": ".png", "OBJ file": ".obj", "MP4 file": ".mp4",
		"Newick tree-format file": ".newick", "BIOM format": ".biom",
	}[kind]
}

// AddInterface creates a socket. kind is the label the server shows, e.g.
// "Image", "Segmentation", "PDF file", "CSV file", "Float", "Anything";
// super_kind follows as on the real server (JSON kinds are stored in the
// database, so their super_kind is "Value"; see AddJSONFileInterface).
func (s *Server) AddInterface(slug, kind string) Interface {
	return s.addInterface(slug, kind, true)
}

// AddJSONFileInterface creates a JSON-kind socket that is not stored in
// the database: super_kind "File", values sent as a user_upload of JSON.
func (s *Server) AddJSONFileInterface(slug, kind string) Interface {
	return s.addInterface(slug, kind, false)
}

func (s *Server) addInterface(slug, kind string, storeInDB bool) Interface {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := &iface{pk: s.st.nextIface, slug: slug, kind: kind, title: strings.ReplaceAll(slug, "-", " ")}
	s.st.nextIface++
	switch {
	case slices.Contains([]string{"Image", "Segmentation", "Heat Map", "Displacement field", "DICOM Image Set"}, kind):
		f.superKind, f.relPath = "Image", "images/"+slug
	case fileKindSuffix(kind) != "":
		f.superKind, f.relPath = "File", slug+fileKindSuffix(kind)
	default:
		f.jsonKind = true
		f.relPath = slug + ".json"
		f.superKind = "File"
		if storeInDB {
			f.superKind = "Value"
		}
	}
	s.st.ifaces[slug] = f
	return s.ifaceJSON(f)
}

// AddItem creates an empty item (title may be "") in the archive.
func (s *Server) AddItem(archiveSlug, title string) ArchiveItem {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ar := range s.st.archives {
		if ar.slug == archiveSlug {
			it := &item{pk: s.st.uuid(), title: title, archive: ar.pk, key: s.st.orderKey()}
			s.st.addItem(it)
			return s.itemJSON(it)
		}
	}
	return ArchiveItem{}
}

func (s *Server) itemIfaceLocked(itemPK, ifaceSlug string) (*item, *iface, error) {
	it := s.st.items[itemPK]
	if it == nil {
		return nil, nil, fmt.Errorf("gcapitest: no item %s", itemPK)
	}
	f := s.st.ifaces[ifaceSlug]
	if f == nil {
		return nil, nil, fmt.Errorf("gcapitest: no socket %s", ifaceSlug)
	}
	return it, f, nil
}

// SetValue sets a JSON value directly, without the checks of a PATCH.
func (s *Server) SetValue(itemPK, ifaceSlug string, v json.RawMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, f, err := s.itemIfaceLocked(itemPK, ifaceSlug)
	if err != nil {
		return err
	}
	it.setValue(s.newCIVLocked(f, func(c *civ) { c.value = append(json.RawMessage(nil), v...) }))
	it.key = s.st.orderKey()
	return nil
}

// AddImageValue stores content as an image named filename (TIFF for .tif
// and .tiff, MHD otherwise) and makes it the item's value for the socket.
func (s *Server) AddImageValue(itemPK, ifaceSlug, filename string, content []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, f, err := s.itemIfaceLocked(itemPK, ifaceSlug)
	if err != nil {
		return err
	}
	pk := s.st.uuid()
	b, err := s.writeBlob(filepath.Join("images", pk), filename, content)
	if err != nil {
		return fmt.Errorf("gcapitest: store image %s: %w", filename, err)
	}
	typ := "MHD"
	if l := strings.ToLower(filename); strings.HasSuffix(l, ".tif") || strings.HasSuffix(l, ".tiff") {
		typ = "TIFF"
	}
	im := &image{pk: pk, filePK: s.st.uuid(), name: filename, typ: typ, content: b, key: s.st.orderKey()}
	if hdr, ok := parseMetaIO(content[:min(len(content), headSize)]); ok {
		im.w, im.h, im.d = dims(hdr["DimSize"])
	}
	s.st.images[pk] = im
	it.setValue(s.newCIVLocked(f, func(c *civ) { c.image = pk }))
	it.key = s.st.orderKey()
	return nil
}

// AddFileValue stores content as a file value named filename.
func (s *Server) AddFileValue(itemPK, ifaceSlug, filename string, content []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, f, err := s.itemIfaceLocked(itemPK, ifaceSlug)
	if err != nil {
		return err
	}
	b, err := s.writeBlob(filepath.Join("files", s.st.uuid()), filename, content)
	if err != nil {
		return fmt.Errorf("gcapitest: store file %s: %w", filename, err)
	}
	it.setValue(s.newCIVLocked(f, func(c *civ) { c.file = b }))
	it.key = s.st.orderKey()
	return nil
}

// Items returns the archive's items with values in GET form, ordered by pk.
func (s *Server) Items(archiveSlug string) []ArchiveItem {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ArchiveItem
	for _, pk := range sortedKeys(s.st.items) {
		it := s.st.items[pk]
		if ar := s.st.archives[it.archive]; ar != nil && ar.slug == archiveSlug {
			out = append(out, s.itemJSON(it))
		}
	}
	return out
}

// Uploads returns the uploads that exist now (consumed and expired ones
// are deleted), ordered by pk.
func (s *Server) Uploads() []Upload {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Upload
	for _, pk := range sortedKeys(s.st.uploads) {
		out = append(out, s.uploadJSON(s.st.uploads[pk]))
	}
	return out
}

// Sessions returns every upload session, ordered by pk.
func (s *Server) Sessions() []UploadSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []UploadSession
	for _, pk := range sortedKeys(s.st.sessions) {
		out = append(out, s.sessionJSON(s.st.sessions[pk]))
	}
	return out
}

// Images returns every image, ordered by pk.
func (s *Server) Images() []Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Image
	for _, pk := range sortedKeys(s.st.images) {
		out = append(out, s.imageJSON(s.st.images[pk]))
	}
	return out
}

// ImageContent returns the bytes stored for an image: for a one-file
// import the file itself; for several files (an .mhd pair, a DICOM series)
// their concatenation in file-name order; for a ZIP the ZIP.
func (s *Server) ImageContent(imagePK string) ([]byte, error) {
	s.mu.Lock()
	im := s.st.images[imagePK]
	s.mu.Unlock()
	if im == nil {
		return nil, fmt.Errorf("gcapitest: no image %s", imagePK)
	}
	r := im.content.reader()
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("gcapitest: read image %s: %w", imagePK, err)
	}
	return b, nil
}

// UploadContent returns the bytes of a Completed upload.
func (s *Server) UploadContent(uploadPK string) ([]byte, error) {
	s.mu.Lock()
	u := s.st.uploads[uploadPK]
	var b *blob
	if u != nil {
		b = u.object
	}
	s.mu.Unlock()
	if b == nil {
		return nil, fmt.Errorf("gcapitest: no completed upload %s", uploadPK)
	}
	r := b.reader()
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("gcapitest: read upload %s: %w", uploadPK, err)
	}
	return data, nil
}

// Notifications returns what the server told the user so far, oldest
// first: the only trace of a failed file copy.
func (s *Server) Notifications() []Notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Notification(nil), s.st.notes...)
}

// ExpireUploads deletes every upload now, whatever its age and status, as
// the server's hourly cleanup does to uploads older than a day
// (grand-challenge.org app/grandchallenge/uploads/tasks.py
// delete_old_user_uploads): an admin's way to free the user's quota
// without advancing the clock.
func (s *Server) ExpireUploads() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, pk := range sortedKeys(s.st.uploads) {
		s.deleteUploadLocked(pk)
	}
}
