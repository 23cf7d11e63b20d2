package gcapitest

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// worker runs due imports until Close.
func (s *Server) worker() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		s.mu.Lock()
		s.expireLocked()
		now := s.nowLocked()
		var due []*job
		next := time.Duration(-1)
		kept := s.st.jobs[:0]
		for _, j := range s.st.jobs {
			if !j.due.After(now) {
				due = append(due, j)
				continue
			}
			kept = append(kept, j)
			if d := j.due.Sub(now); next < 0 || d < next {
				next = d
			}
		}
		s.st.jobs = kept
		s.mu.Unlock()
		for _, j := range due {
			select {
			case <-s.closing:
				return
			default:
			}
			if j.kind == jobLink {
				s.runLinkJob(j)
			} else {
				s.runJob(j)
			}
		}
		if len(due) > 0 {
			continue
		}
		if next < 0 {
			next = time.Hour
		}
		t.Reset(next)
		select {
		case <-s.closing:
			return
		case <-s.wake:
		case <-t.C:
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
	}
}

// srcFile is one uploaded file an import reads.
type srcFile struct {
	upload string
	name   string
	object *blob
}

func (s *Server) snapshotUploads(j *job) ([]srcFile, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var files []srcFile
	for _, pk := range j.uploads {
		u := s.st.uploads[pk]
		if u == nil || u.object == nil {
			// Not Completed (or gone): reading it from S3 fails, and
			// build_images reports the generic error.
			return nil, "An unexpected error occurred"
		}
		files = append(files, srcFile{upload: pk, name: u.filename, object: u.object})
	}
	return files, ""
}

func (s *Server) failImport(names []string) string {
	s.rmu.Lock()
	f := s.faults.FailImport
	s.rmu.Unlock()
	if f == nil {
		return ""
	}
	return f(names)
}

func (s *Server) failLinkedCheck(names []string) string {
	s.rmu.Lock()
	f := s.faults.FailLinkedCheck
	s.rmu.Unlock()
	if f == nil {
		return ""
	}
	return f(names)
}

// notifyLocked records a notification for the user.
func (s *Server) notifyLocked(kind, desc, item, iface string) {
	s.st.notes = append(s.st.notes, Notification{Kind: kind, Description: desc, Item: item, Interface: iface, Time: s.nowLocked()})
	s.log.Info("gcapitest: notification", "kind", kind, "item", item, "interface", iface, "description", desc)
}

func (s *Server) runJob(j *job) {
	files, errMsg := s.snapshotUploads(j)
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.name
	}
	if errMsg == "" {
		errMsg = s.failImport(names)
	}
	switch j.kind {
	case jobFile:
		s.runFileJob(j, files, errMsg)
		return
	case jobDICOM:
		s.runDICOMJob(j, files, errMsg)
		return
	}
	var res buildResult
	if errMsg == "" {
		res = buildImages(files)
		errMsg = res.errMsg
	}
	linkErr := ""
	if errMsg == "" {
		linkErr = s.failLinkedCheck(names)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	se := s.st.sessions[j.session]
	if se == nil {
		return
	}
	se.key = s.st.orderKey()
	fail := func(msg string) {
		se.status = "Failed"
		se.errMsg = msg
		s.notifyLocked("IMAGE-IMPORT", msg, j.item, j.iface)
	}
	if errMsg != "" {
		// A failed build keeps its uploads (cases/tasks.py build_images
		// deletes them only after images were made).
		fail(errMsg)
		return
	}
	for _, f := range files {
		if s.st.uploads[f.upload] == nil {
			fail("An unexpected error occurred")
			return
		}
	}
	// build_images: every image is saved, the session Succeeded, the
	// uploads deleted; only then does the linked task look at the result.
	var made []string
	for _, b := range res.images {
		content, err := s.linkBlob(filepath.Join("images", s.st.uuid()), b.name, b.segs)
		if err != nil {
			fail("An unexpected error occurred")
			return
		}
		im := &image{pk: s.st.uuid(), filePK: s.st.uuid(), name: b.name, typ: b.typ, content: content,
			w: b.w, h: b.h, d: b.d, study: b.study, series: b.series, origin: se.pk, key: s.st.orderKey()}
		s.st.images[im.pk] = im
		made = append(made, im.pk)
	}
	se.status = "Succeeded"
	se.errMsg = res.warn
	se.imageSet = made
	for _, f := range files {
		s.deleteUploadLocked(f.upload)
	}
	// The linked task add_image_to_object (components/tasks.py) runs
	// after the build, on its own: until then the session shows
	// Succeeded with no uploads left.
	s.st.jobs = append(s.st.jobs, &job{kind: jobLink, session: se.pk, item: j.item, iface: j.iface, name: linkErr, due: s.nowLocked()})
	s.poke()
}

// runLinkJob is add_image_to_object for a session that Succeeded: exactly
// one image, which must pass the socket's checks, else the session turns
// Failed with "Image validation for socket <title> failed with error:
// <message>." (cases/models.py RawImageUploadSession.update_status via
// core/error_handlers.py RawImageUploadSessionErrorHandler).
func (s *Server) runLinkJob(j *job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	se := s.st.sessions[j.session]
	it, f := s.st.items[j.item], s.st.ifaces[j.iface]
	if se == nil || it == nil || f == nil {
		return
	}
	msg := j.name // the FailLinkedCheck answer
	if len(se.imageSet) != 1 {
		msg = "Image imports should result in a single image"
	}
	if msg != "" {
		se.status = "Failed"
		se.errMsg = fmt.Sprintf("Image validation for socket %s failed with error: %s.", f.title, msg)
		se.key = s.st.orderKey()
		s.notifyLocked("IMAGE-IMPORT", se.errMsg, j.item, j.iface)
		return
	}
	im := se.imageSet[0]
	it.setValue(s.newCIVLocked(f, func(v *civ) { v.image = im }))
	it.key = s.st.orderKey()
}

// runDICOMJob is the import of a DICOM Image Set value
// (cases/tasks.py import_dicom_to_health_imaging, then add_image_to_object):
// no upload session; every file must be DICOM of one series. Failures are
// notifications only.
func (s *Server) runDICOMJob(j *job, files []srcFile, errMsg string) {
	var key dicomGroup
	if errMsg == "" {
		n := 0
		for i, f := range files {
			// One DICOM file per upload, never a ZIP's entries
			// (readDICOMFiles).
			es, err := uploadItself(f, i)
			if err != nil {
				errMsg = "An unexpected error occurred"
				break
			}
			for _, e := range es {
				k, ok := dicomKey(e.head)
				if !ok {
					errMsg = "Not a valid DICOM file: " + e.name
					break
				}
				if n > 0 && k.key != key.key {
					errMsg = "All DICOM files must belong to the same series"
					break
				}
				key = k
				n++
			}
		}
		if errMsg == "" && n == 0 {
			errMsg = "No DICOM files found"
		}
	}
	var set *storedImageSet
	if errMsg == "" {
		set, errMsg = s.storeImageSet(files)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	it, f := s.st.items[j.item], s.st.ifaces[j.iface]
	if errMsg == "" && (it == nil || f == nil) {
		errMsg = "An unexpected error occurred"
	}
	if errMsg != "" {
		// The uploads stay until the daily cleanup.
		s.notifyLocked("DICOM-IMAGE-SET", errMsg, j.item, j.iface)
		return
	}
	var segs []string
	for _, sf := range files {
		segs = append(segs, sf.object.segs...)
	}
	content, err := s.linkBlob(filepath.Join("images", s.st.uuid()), j.name, segs)
	if err != nil {
		s.notifyLocked("DICOM-IMAGE-SET", "An unexpected error occurred", j.item, j.iface)
		return
	}
	// Only the set and the name: the image's study and series fields stay
	// blank (cases/models.py DICOMImageSetUpload.convert_image_set_to_internal);
	// the set's de-identified UIDs are in its instances.
	im := &image{pk: s.st.uuid(), name: j.name, content: content,
		imageSetID: strings.ReplaceAll(s.st.uuid(), "-", ""), dicomSet: set, key: s.st.orderKey()}
	s.st.images[im.pk] = im
	for _, sf := range files {
		s.deleteUploadLocked(sf.upload)
	}
	if f.kind != "DICOM Image Set" {
		// components/models.py ComponentInterfaceValue._validate_image_kind.
		s.notifyLocked("DICOM-IMAGE-SET", fmt.Sprintf("Image validation for socket %s failed with error: Image may not be DICOM.", f.title), j.item, j.iface)
		return
	}
	it.setValue(s.newCIVLocked(f, func(v *civ) { v.image = im.pk }))
	it.key = s.st.orderKey()
}

func (s *Server) runFileJob(j *job, files []srcFile, errMsg string) {
	if errMsg == "" && len(files) == 1 {
		s.mu.Lock()
		f := s.st.ifaces[j.iface]
		jsonKind := f != nil && f.jsonKind
		s.mu.Unlock()
		if jsonKind {
			// JSON sockets stored as files must hold valid JSON.
			r := files[0].object.reader()
			ok := json.NewDecoder(r).Decode(new(any)) == nil
			r.Close()
			if !ok {
				errMsg = "JSON does not fulfill schema: invalid JSON"
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if errMsg == "" && (len(files) != 1 || s.st.uploads[files[0].upload] == nil) {
		errMsg = "An unexpected error occurred"
	}
	if errMsg != "" {
		// add_file_to_object (components/tasks.py) only notifies: the item
		// keeps its old value and the upload stays until the daily cleanup.
		s.notifyLocked("FILE-COPY", errMsg, j.item, j.iface)
		return
	}
	it, f := s.st.items[j.item], s.st.ifaces[j.iface]
	if it == nil || f == nil {
		return
	}
	content, err := s.linkBlob(filepath.Join("files", s.st.uuid()), files[0].name, files[0].object.segs)
	if err != nil {
		return
	}
	it.setValue(s.newCIVLocked(f, func(v *civ) { v.file = content }))
	it.key = s.st.orderKey()
	s.deleteUploadLocked(files[0].upload)
}

// linkBlob hard-links (or copies) segment files into a new directory under
// the store, so the content outlives the uploads it came from.
func (s *Server) linkBlob(rel, name string, segs []string) (*blob, error) {
	dir := filepath.Join(s.opts.StoreDir, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	b := &blob{name: name}
	for i, src := range segs {
		dst := filepath.Join(dir, fmt.Sprintf("%05d", i))
		if err := os.Link(src, dst); err != nil {
			if err := copyFile(dst, src); err != nil {
				return nil, err
			}
		}
		fi, err := os.Stat(dst)
		if err != nil {
			return nil, fmt.Errorf("stat %s: %w", dst, err)
		}
		b.segs = append(b.segs, dst)
		b.size += fi.Size()
	}
	return b, nil
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	if _, err := copyTo(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return out.Close()
}

// writeBlob stores bytes given by setup methods.
func (s *Server) writeBlob(rel, name string, content []byte) (*blob, error) {
	dir := filepath.Join(s.opts.StoreDir, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	p := filepath.Join(dir, "00000")
	if err := os.WriteFile(p, content, 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", p, err)
	}
	return &blob{name: name, segs: []string{p}, size: int64(len(content))}, nil
}

// reader returns the blob's bytes as one stream.
func (b *blob) reader() io.ReadCloser {
	return &segReader{segs: b.segs}
}

type segReader struct {
	segs []string
	cur  *os.File
}

func (r *segReader) Read(p []byte) (int, error) {
	for {
		if r.cur == nil {
			if len(r.segs) == 0 {
				return 0, io.EOF
			}
			f, err := os.Open(r.segs[0])
			if err != nil {
				return 0, err
			}
			r.cur, r.segs = f, r.segs[1:]
		}
		n, err := r.cur.Read(p)
		if err == io.EOF {
			r.cur.Close()
			r.cur = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (r *segReader) Close() error {
	if r.cur != nil {
		return r.cur.Close()
	}
	return nil
}

// readerAt gives random access over the segments, for zip files.
type blobReaderAt struct {
	files []*os.File
	offs  []int64
	size  int64
}

func openReaderAt(b *blob) (*blobReaderAt, error) {
	ra := &blobReaderAt{}
	for _, p := range b.segs {
		f, err := os.Open(p)
		if err != nil {
			ra.Close()
			return nil, err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			ra.Close()
			return nil, err
		}
		ra.files = append(ra.files, f)
		ra.offs = append(ra.offs, ra.size)
		ra.size += fi.Size()
	}
	return ra, nil
}

func (ra *blobReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for i, f := range ra.files {
		end := ra.size
		if i+1 < len(ra.offs) {
			end = ra.offs[i+1]
		}
		if off+int64(n) >= end || len(p) == n {
			continue
		}
		m, err := f.ReadAt(p[n:min(len(p), n+int(end-off-int64(n)))], off+int64(n)-ra.offs[i])
		n += m
		if err != nil && err != io.EOF {
			return n, err
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (ra *blobReaderAt) Close() {
	for _, f := range ra.files {
		f.Close()
	}
}

// ---- image building (panimg, in miniature) ----

// entry is one file of an import after unzipping.
type entry struct {
	dir, name string
	head      []byte // the first bytes, enough to recognise the format
	src       int    // index of the upload it came from
}

type builtImage struct {
	name, typ     string
	w, h, d       *int
	study, series string
	segs          []string
}

type buildResult struct {
	images []builtImage
	errMsg string // non-empty: the session fails with it
	warn   string // error_message of a session that still succeeded
}

// headSize is how much of each file the import reads to recognise it: more
// than any MetaIO or DICOM header the samples and tests use, and small enough
// that benchmarks measure the client, not the fake.
const headSize = 64 << 10

func plural(n int) string {
	if n == 1 {
		return "1 file could not be imported"
	}
	return strconv.Itoa(n) + " files could not be imported"
}

func buildImages(files []srcFile) buildResult {
	names := map[string]bool{}
	for _, f := range files {
		if names[f.name] {
			return buildResult{errMsg: "Duplicate files uploaded, please try again with a unique set of files"}
		}
		names[f.name] = true
	}
	var entries []entry
	for i, f := range files {
		es, err := expand(f, i)
		if err != nil {
			return buildResult{errMsg: "An unexpected error occurred"}
		}
		entries = append(entries, es...)
	}
	byDir := map[string][]entry{}
	for _, e := range entries {
		byDir[e.dir] = append(byDir[e.dir], e)
	}
	var images []struct {
		builtImage
		srcs []int
	}
	failed := 0
	dirs := sortedKeys(byDir)
	for _, d := range dirs {
		es := byDir[d]
		slices.SortFunc(es, func(a, b entry) int { return strings.Compare(a.name, b.name) })
		used := make([]bool, len(es))
		add := func(b builtImage, idx ...int) {
			var srcs []int
			for _, i := range idx {
				used[i] = true
				srcs = append(srcs, es[i].src)
			}
			images = append(images, struct {
				builtImage
				srcs []int
			}{b, srcs})
		}
		find := func(name string) int {
			for i, e := range es {
				if e.name == name && !used[i] {
					return i
				}
			}
			return -1
		}
		// MetaIO first, as panimg's builder order has it.
		for i, e := range es {
			lower := strings.ToLower(e.name)
			if used[i] || !(strings.HasSuffix(lower, ".mha") || strings.HasSuffix(lower, ".mhd")) {
				continue
			}
			hdr, ok := parseMetaIO(e.head)
			if !ok {
				continue
			}
			w, h, dd := dims(hdr["DimSize"])
			data := hdr["ElementDataFile"]
			if strings.HasSuffix(lower, ".mha") {
				if data == "LOCAL" {
					add(builtImage{name: e.name, typ: "MHD", w: w, h: h, d: dd}, i)
				}
				continue
			}
			if data == "" || data == "LOCAL" || strings.ContainsAny(data, `/\`) {
				continue
			}
			if j := find(data); j >= 0 && j != i {
				add(builtImage{name: e.name, typ: "MHD", w: w, h: h, d: dd}, i, j)
			}
		}
		for i, e := range es {
			lower := strings.ToLower(e.name)
			if used[i] {
				continue
			}
			switch {
			case strings.HasSuffix(lower, ".nii") && isNIfTI(e.head):
				add(builtImage{name: e.name, typ: "MHD"}, i)
			case strings.HasSuffix(lower, ".nii.gz") && isNIfTIGz(e.head):
				add(builtImage{name: e.name, typ: "MHD"}, i)
			}
		}
		// DICOM: one image per panimg key, named "<StudyInstanceUID>-<n>"
		// with n counting the images of that study (panimg
		// image_builders/dicom.py get_dicom_headers_by_study).
		groups := map[[3]string][]int{}
		first := map[[3]string]dicomGroup{}
		var order [][3]string
		for i, e := range es {
			if used[i] || len(e.head) < 132 || string(e.head[128:132]) != "DICM" {
				continue
			}
			g, ok := dicomKey(e.head)
			if !ok {
				continue
			}
			if _, seen := groups[g.key]; !seen {
				order = append(order, g.key)
				first[g.key] = g
			}
			groups[g.key] = append(groups[g.key], i)
		}
		perStudy := map[string]int{}
		for _, k := range order {
			n := perStudy[k[0]]
			perStudy[k[0]]++
			g := first[k]
			var depth *int
			if k[1] == g.series {
				// A 3D series: as many slices as files × frames. A 4D set
				// (a StackID) divides them by its time points; not modelled.
				d := len(groups[k]) * g.frames
				depth = &d
			}
			add(builtImage{name: fmt.Sprintf("%s-%d", k[0], n), typ: "MHD", study: g.study, series: g.series, d: depth}, groups[k]...)
		}
		for i, e := range es {
			lower := strings.ToLower(e.name)
			if used[i] {
				continue
			}
			switch {
			case (strings.HasSuffix(lower, ".tif") || strings.HasSuffix(lower, ".tiff")) && isTIFF(e.head):
				add(builtImage{name: e.name, typ: "TIFF"}, i)
			case strings.HasSuffix(lower, ".png") && bytes.HasPrefix(e.head, []byte("\x89PNG\r\n\x1a\n")):
				add(builtImage{name: e.name, typ: "MHD"}, i)
			case (strings.HasSuffix(lower, ".jpg") || strings.HasSuffix(lower, ".jpeg")) && bytes.HasPrefix(e.head, []byte{0xff, 0xd8, 0xff}):
				add(builtImage{name: e.name, typ: "MHD"}, i)
			}
		}
		for i := range es {
			if !used[i] {
				failed++
			}
		}
	}
	if len(images) == 0 {
		return buildResult{errMsg: plural(failed)}
	}
	// Every image is kept; whether one is too many is the linked task's
	// question, asked after the build (components/tasks.py add_image_to_object).
	res := buildResult{}
	for _, im := range images {
		img := im.builtImage
		// The stored content: the bytes of the uploads the image came from.
		seen := map[int]bool{}
		srcs := im.srcs
		slices.Sort(srcs)
		for _, i := range srcs {
			if !seen[i] {
				seen[i] = true
				img.segs = append(img.segs, files[i].object.segs...)
			}
		}
		res.images = append(res.images, img)
	}
	if failed > 0 {
		res.warn = plural(failed)
	}
	return res
}

// uploadItself returns one upload as the one entry it is, its head read.
func uploadItself(f srcFile, src int) ([]entry, error) {
	r := f.object.reader()
	head := make([]byte, headSize)
	n, err := io.ReadFull(r, head)
	r.Close()
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return []entry{{name: f.name, head: head[:n], src: src}}, nil
}

// expand returns the entries of one upload: itself, or what a ZIP holds.
func expand(f srcFile, src int) ([]entry, error) {
	es, err := uploadItself(f, src)
	if err != nil || !bytes.HasPrefix(es[0].head, []byte("PK\x03\x04")) {
		return es, err
	}
	head := es[0].head
	ra, err := openReaderAt(f.object)
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	zr, err := zip.NewReader(ra, ra.size)
	if err != nil {
		return []entry{{name: f.name, head: head, src: src}}, nil // not a valid zip: a file that fails
	}
	var out []entry
	for _, zf := range zr.File {
		name := zf.Name
		base := path.Base(name)
		if zf.FileInfo().IsDir() || strings.Contains(name, "__MACOSX") || base == ".DS_Store" || base == "desktop.ini" {
			continue
		}
		rc, err := zf.Open()
		if err != nil {
			out = append(out, entry{dir: f.name + "/" + path.Dir(name), name: base, src: src})
			continue
		}
		h := make([]byte, headSize)
		n, _ := io.ReadFull(rc, h)
		rc.Close()
		out = append(out, entry{dir: f.name + "/" + path.Dir(name), name: base, head: h[:n], src: src})
	}
	return out, nil
}

// parseMetaIO reads a MetaIO header up to ElementDataFile.
func parseMetaIO(head []byte) (map[string]string, bool) {
	hdr := map[string]string{}
	for line := range bytes.Lines(head) {
		kb, vb, ok := bytes.Cut(line, []byte("="))
		if !ok {
			return nil, false
		}
		k, v := string(bytes.TrimSpace(kb)), string(bytes.TrimSpace(vb))
		hdr[k] = v
		if k == "ElementDataFile" {
			ok := hdr["ObjectType"] == "Image" && hdr["NDims"] != "" && hdr["DimSize"] != "" && hdr["ElementType"] != ""
			return hdr, ok
		}
	}
	return nil, false
}

func dims(s string) (w, h, d *int) {
	f := strings.Fields(s)
	p := func(i int) *int {
		if i >= len(f) {
			return nil
		}
		n, err := strconv.Atoi(f[i])
		if err != nil {
			return nil
		}
		return &n
	}
	return p(0), p(1), p(2)
}

func isNIfTI(h []byte) bool {
	if len(h) < 348 {
		return false
	}
	magic := string(h[344:348])
	size := binary.LittleEndian.Uint32(h)
	if size != 348 {
		size = binary.BigEndian.Uint32(h)
	}
	return size == 348 && (magic == "n+1\x00" || magic == "ni1\x00")
}

func isNIfTIGz(h []byte) bool {
	zr, err := gzip.NewReader(bytes.NewReader(h))
	if err != nil {
		return false
	}
	b := make([]byte, 348)
	if _, err := io.ReadFull(zr, b); err != nil {
		return false
	}
	return isNIfTI(b)
}

func isTIFF(h []byte) bool {
	return bytes.HasPrefix(h, []byte("II*\x00")) || bytes.HasPrefix(h, []byte("MM\x00*")) ||
		bytes.HasPrefix(h, []byte("II+\x00")) || bytes.HasPrefix(h, []byte("MM\x00+"))
}
