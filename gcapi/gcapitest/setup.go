package gcapitest

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gcingest/gcingest/gcapi"
)

// convert turns one of the server's JSON shapes into a gcapi type, which
// is also a deep copy.
func convert[T any](v any) T {
	var out T
	b, err := json.Marshal(v)
	if err == nil {
		json.Unmarshal(b, &out)
	}
	return out
}

// AddArchive creates an archive the token's user may upload to.
func (s *Server) AddArchive(slug, title string) gcapi.Archive {
	s.mu.Lock()
	defer s.mu.Unlock()
	ar := &archive{pk: s.st.uuid(), slug: slug, title: title, key: s.st.orderKey()}
	s.st.archives[ar.pk] = ar
	return convert[gcapi.Archive](s.archiveJSON(ar))
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
func (s *Server) AddInterface(slug, kind string) gcapi.Interface {
	return s.addInterface(slug, kind, true)
}

// AddJSONFileInterface creates a JSON-kind socket that is not stored in
// the database: super_kind "File", values sent as a user_upload of JSON.
func (s *Server) AddJSONFileInterface(slug, kind string) gcapi.Interface {
	return s.addInterface(slug, kind, false)
}

func (s *Server) addInterface(slug, kind string, storeInDB bool) gcapi.Interface {
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
	return convert[gcapi.Interface](s.ifaceJSON(f))
}

// AddItem creates an empty item (title may be "") in the archive.
func (s *Server) AddItem(archiveSlug, title string) gcapi.ArchiveItem {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ar := range s.st.archives {
		if ar.slug == archiveSlug {
			it := &item{pk: s.st.uuid(), title: title, archive: ar.pk, key: s.st.orderKey()}
			s.st.items[it.pk] = it
			return convert[gcapi.ArchiveItem](s.itemJSON(it, true))
		}
	}
	return gcapi.ArchiveItem{}
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
func (s *Server) Items(archiveSlug string) []gcapi.ArchiveItem {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []gcapi.ArchiveItem
	for _, pk := range sortedKeys(s.st.items) {
		it := s.st.items[pk]
		if ar := s.st.archives[it.archive]; ar != nil && ar.slug == archiveSlug {
			out = append(out, convert[gcapi.ArchiveItem](s.itemJSON(it, true)))
		}
	}
	return out
}

// Uploads returns the uploads that exist now (consumed and expired ones
// are deleted), ordered by pk.
func (s *Server) Uploads() []gcapi.Upload {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []gcapi.Upload
	for _, pk := range sortedKeys(s.st.uploads) {
		out = append(out, convert[gcapi.Upload](s.uploadJSON(s.st.uploads[pk])))
	}
	return out
}

// Sessions returns every upload session, ordered by pk.
func (s *Server) Sessions() []gcapi.UploadSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []gcapi.UploadSession
	for _, pk := range sortedKeys(s.st.sessions) {
		out = append(out, convert[gcapi.UploadSession](s.sessionJSON(s.st.sessions[pk])))
	}
	return out
}

// Images returns every image, ordered by pk.
func (s *Server) Images() []gcapi.Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []gcapi.Image
	for _, pk := range sortedKeys(s.st.images) {
		out = append(out, convert[gcapi.Image](s.imageJSON(s.st.images[pk])))
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
