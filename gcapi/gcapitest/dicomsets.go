package gcapitest

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DICOM image sets: what the server keeps of a DICOM Image Set value and
// how it hands the instances out again.
//
// The real server de-identifies every uploaded file, imports the results
// into AWS HealthImaging and keeps only the image set's id and its frame
// metadata (grand-challenge.org app/grandchallenge/cases/models.py:
// DICOMImageSetUpload._deidentify_files, convert_image_set_to_internal,
// DICOMImageSet). A client downloads the instances with
// GET /api/v1/cases/images/{pk}/dicom/instances/, which answers one
// pre-signed HealthImaging GetDICOMInstance request per frame
// (cases/views.py ImageViewSet.dicom_instances, DICOMImageSet.instance_requests,
// components/backends/base.py serialize_aws_request). The fake stores the
// de-identified instances itself and serves those requests on its storage
// host, under /healthimaging/.

// dicomInstance is one stored instance of a DICOM image set.
type dicomInstance struct {
	sop     string // SOPInstanceUID after de-identification
	ts      string // the stored transfer syntax (StoredTransferSyntaxUID)
	frames  int    // NumberOfFrames, 1 when absent
	content *blob
}

// gcRootUID is the UID root of the server's de-identifier
// (grand-challenge-dicom-de-identifier deidentifier.py GRAND_CHALLENGE_ROOT_UID).
const gcRootUID = "1.2.826.0.1.3680043.10.1666."

// Values the fake's HealthImaging puts into the requests it signs.
const (
	healthImagingRegion    = "eu-central-1" // settings.AWS_DEFAULT_REGION's default
	healthImagingDatastore = "0123456789abcdef0123456789abcdef"
	// SignedRequestExpiry is how long a signed HealthImaging request is
	// accepted after the time it was signed at: a SigV4 signature is valid
	// for 15 minutes from its X-Amz-Date [external: AWS SigV4 documentation].
	SignedRequestExpiry = 15 * time.Minute
)

// dicomIDSuffix is the server's generate_dicom_id_suffix
// (cases/models.py): the decimal value of the first 14 bytes of
// SHA-512("<pk>-<kind>"), appended to the de-identifier's root to give the
// study and series UIDs of a DICOMImageSetUpload (DICOMImageSetUpload.save).
func dicomIDSuffix(pk, kind string) string {
	d := sha512.Sum512([]byte(pk + "-" + kind))
	return new(big.Int).SetBytes(d[:14]).String()
}

// storedImageSet is what importing one DICOM Image Set value made.
type storedImageSet struct {
	study, series string // the de-identified UIDs every instance shares
	instances     []*dicomInstance
}

// storeImageSet de-identifies every DICOM file of the uploads (ZIPs
// expanded, as runDICOMJob validated them) and stores the results as the
// instances of a new image set. It returns the error message the import
// fails with, or "".
func (s *Server) storeImageSet(files []srcFile) (*storedImageSet, string) {
	s.mu.Lock()
	setPK := s.st.uuid()
	s.mu.Unlock()
	study := gcRootUID + dicomIDSuffix(setPK, "study")
	series := gcRootUID + dicomIDSuffix(setPK, "series")
	uids := map[string]string{}
	// The de-identifier maps every other UID it replaces to a new one under
	// its root, the same original to the same new UID within one upload
	// (DicomDeidentifier.uid_map). The fake derives them from the set's pk.
	newUID := func(old string) string {
		if u, ok := uids[old]; ok {
			return u
		}
		u := gcRootUID + dicomIDSuffix(setPK, "uid-"+old)
		uids[old] = u
		return u
	}
	set := &storedImageSet{study: study, series: series}
	seen := map[string]bool{}
	n := 0
	for _, f := range files {
		raws, err := readDICOMFiles(f)
		if err != nil {
			return nil, "An unexpected error occurred"
		}
		for _, raw := range raws {
			out, info, err := deidentifyDICOM(raw, study, series, newUID)
			if err != nil {
				return nil, "Not a valid DICOM file: " + f.name
			}
			if seen[info.sop] {
				// HealthImaging keeps one instance per SOPInstanceUID.
				continue
			}
			seen[info.sop] = true
			b, err := s.writeBlob(filepath.Join("images", "dicom", setPK, strconv.Itoa(n)), info.sop+".dcm", out)
			if err != nil {
				return nil, "An unexpected error occurred"
			}
			n++
			set.instances = append(set.instances, &dicomInstance{sop: info.sop, ts: info.ts, frames: info.frames, content: b})
		}
	}
	if len(set.instances) == 0 {
		return nil, "No DICOM files found"
	}
	return set, ""
}

// readDICOMFiles returns the bytes of the one DICOM file an upload is: the
// server de-identifies each upload of a DICOM image set as a single file
// (grand-challenge.org app/grandchallenge/cases/models.py
// DICOMImageSetUpload._deidentify_files: deid.deidentify_file per
// upload), so a ZIP is not opened; it fails as a file that is not DICOM.
func readDICOMFiles(f srcFile) ([][]byte, error) {
	r := f.object.reader()
	all, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		return nil, fmt.Errorf("read upload %s: %w", f.name, err)
	}
	return [][]byte{all}, nil
}

// dicomInfo is what the image set's frame metadata needs of an instance.
type dicomInfo struct {
	sop, ts string
	frames  int
}

// rawElement is one top-level data element as it appears in the file.
type rawElement struct {
	tag uint32
	raw []byte
}

// deidentifyDICOM rewrites a DICOM Part-10 file the way the observable
// part of the server's de-identification does: StudyInstanceUID and
// SeriesInstanceUID become the upload's generated ones, SOPInstanceUID (and
// MediaStorageSOPInstanceUID with it) a new UID under the de-identifier's
// root, and PatientIdentityRemoved (0012,0062) "YES" and
// DeidentificationMethod (0012,0063) are added
// (grand-challenge-dicom-de-identifier deidentifier.py deidentify_dataset,
// set_patient_identity_removed_tag, set_deidentification_method_tag). The
// rest of the de-identification procedure (which tags it blanks or drops)
// is not modelled: every other element is kept as it was, byte for byte.
func deidentifyDICOM(b []byte, study, series string, newUID func(string) string) ([]byte, dicomInfo, error) {
	if len(b) < 132 || string(b[128:132]) != "DICM" {
		return nil, dicomInfo{}, fmt.Errorf("no DICM preamble")
	}
	d := &dcmReader{b: b, pos: 132, explicit: true}
	var meta, data []rawElement
	ts := tsExplicitLE
	for !d.done() {
		start := d.pos
		tag, val, ok := d.next()
		if !ok {
			return nil, dicomInfo{}, fmt.Errorf("bad meta element at byte %d", start)
		}
		if tag>>16 != 0x0002 {
			d.pos = start
			break
		}
		if tag == 0x00020010 {
			ts = uid(val)
		}
		meta = append(meta, rawElement{tag, b[start:d.pos]})
	}
	switch ts {
	case "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99":
		// Big endian and deflated data sets: not read by this fake.
		return nil, dicomInfo{}, fmt.Errorf("transfer syntax %s not supported", ts)
	}
	explicit := ts != tsImplicitLE
	d.explicit = explicit
	info := dicomInfo{ts: ts, frames: 1}
	var oldSOP string
	for !d.done() {
		start := d.pos
		tag, val, ok := d.next()
		if !ok {
			return nil, dicomInfo{}, fmt.Errorf("bad element at byte %d", start)
		}
		switch tag {
		case 0x00080018:
			oldSOP = uid(val)
		case 0x00280008:
			if n, err := strconv.Atoi(strings.TrimSpace(strings.TrimRight(string(val), "\x00"))); err == nil && n > 0 {
				info.frames = n
			}
		}
		data = append(data, rawElement{tag, b[start:d.pos]})
	}
	if d.pos != len(b) {
		return nil, dicomInfo{}, fmt.Errorf("%d bytes after the last element", len(b)-d.pos)
	}
	if oldSOP == "" {
		return nil, dicomInfo{}, fmt.Errorf("no SOPInstanceUID")
	}
	info.sop = newUID(oldSOP)
	data = setElement(data, 0x00080018, encodeElement(0x00080018, "UI", info.sop, explicit))
	data = setElement(data, 0x0020000D, encodeElement(0x0020000D, "UI", study, explicit))
	data = setElement(data, 0x0020000E, encodeElement(0x0020000E, "UI", series, explicit))
	data = setElement(data, 0x00120062, encodeElement(0x00120062, "CS", "YES", explicit))
	data = setElement(data, 0x00120063, encodeElement(0x00120063, "LO", "grand-challenge-dicom-de-identifier:procedure:gcapitest", explicit))
	meta = setElement(meta, 0x00020003, encodeElement(0x00020003, "UI", info.sop, true))

	var body bytes.Buffer
	for _, e := range meta {
		if e.tag != 0x00020000 {
			body.Write(e.raw)
		}
	}
	var out bytes.Buffer
	out.Write(b[:132])
	var gl [4]byte
	binary.LittleEndian.PutUint32(gl[:], uint32(body.Len()))
	out.Write(encodeRaw(0x00020000, "UL", gl[:], true))
	out.Write(body.Bytes())
	for _, e := range data {
		out.Write(e.raw)
	}
	return out.Bytes(), info, nil
}

// setElement replaces the element with e's tag, or inserts e in tag order.
func setElement(els []rawElement, tag uint32, raw []byte) []rawElement {
	for i, e := range els {
		if e.tag == tag {
			els[i].raw = raw
			return els
		}
		if e.tag > tag {
			return append(els[:i], append([]rawElement{{tag, raw}}, els[i:]...)...)
		}
	}
	return append(els, rawElement{tag, raw})
}

// encodeElement encodes a string element, padded to even length (UIDs with
// NUL, text with a space).
func encodeElement(tag uint32, vr, s string, explicit bool) []byte {
	pad := byte(' ')
	if vr == "UI" {
		pad = 0
	}
	return encodeRaw(tag, vr, evenPad(s, pad), explicit)
}

// encodeRaw encodes one little-endian data element with a short value.
func encodeRaw(tag uint32, vr string, val []byte, explicit bool) []byte {
	le := binary.LittleEndian
	var b []byte
	b = le.AppendUint16(b, uint16(tag>>16))
	b = le.AppendUint16(b, uint16(tag))
	if explicit {
		b = append(b, vr...)
		b = le.AppendUint16(b, uint16(len(val)))
	} else {
		b = le.AppendUint32(b, uint32(len(val)))
	}
	return append(b, val...)
}

// ---- the API side ----

// dicomInstances is GET /api/v1/cases/images/{pk}/dicom/instances/
// (cases/views.py ImageViewSet.dicom_instances): the image as get_object
// finds it (404 when unknown or not visible), 404 "This image does not have
// a DICOM Image Set." for other images, else a JsonResponse (not paginated)
// with the image set id and one signed GetDICOMInstance request per frame of
// the set's image_frame_metadata, so a multi-frame instance is listed once
// per frame (DICOMImageSet.instance_requests).
func (a *apiReq) dicomInstances(pk string) {
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	im, ok := s.st.images[pk]
	if !ok || a.user == 0 {
		notFound(a.w)
		return
	}
	if im.imageSetID == "" || im.dicomSet == nil {
		detail(a.w, 404, "This image does not have a DICOM Image Set.")
		return
	}
	now := s.nowLocked()
	type request struct {
		URL     string            `json:"url"`
		Method  string            `json:"method"`
		Data    *string           `json:"data"`
		Headers map[string]string `json:"headers"`
	}
	type instance struct {
		SOPInstanceUID string  `json:"sop_instance_uid"`
		GetInstance    request `json:"get_instance"`
	}
	out := struct {
		ImageSetID string     `json:"image_set_id"`
		Instances  []instance `json:"instances"`
	}{ImageSetID: im.imageSetID, Instances: []instance{}}
	for _, in := range im.dicomSet.instances {
		u, h := s.signInstanceRequest(im, in, now)
		for range in.frames {
			out.Instances = append(out.Instances, instance{SOPInstanceUID: in.sop, GetInstance: request{URL: u, Method: "GET", Headers: h}})
		}
	}
	writeJSON(a.w, 200, out)
}

// instancePath is where the fake's HealthImaging serves an instance: the
// path of the real GetDICOMInstance URL (DICOMImageSet.instance_requests),
// under /healthimaging on the storage host. The image set's study and
// series UIDs are the de-identified ones, which every instance shares.
func instancePath(study, series, sop string) string {
	return "/healthimaging/datastore/" + healthImagingDatastore + "/studies/" + study + "/series/" + series + "/instances/" + sop
}

// signInstanceRequest makes the URL and headers of one signed
// GetDICOMInstance request. Like botocore's SigV4Auth.add_auth, the
// signature is an Authorization header over the method, path, query, Accept
// and X-Amz-Date, so the request is valid only as given.
func (s *Server) signInstanceRequest(im *image, in *dicomInstance, now time.Time) (string, map[string]string) {
	p := instancePath(im.dicomSet.study, im.dicomSet.series, in.sop)
	q := url.Values{"imageSetId": {im.imageSetID}}.Encode()
	accept := "application/dicom; transfer-syntax=" + in.ts
	date := now.UTC().Format("20060102T150405Z")
	sig := s.sign("GET", p, q, accept, date)
	return s.StorageURL + p + "?" + q, map[string]string{
		"Accept":     accept,
		"X-Amz-Date": date,
		"Authorization": fmt.Sprintf("AWS4-HMAC-SHA256 Credential=GCAPITESTKEY/%s/%s/medical-imaging/aws4_request, SignedHeaders=accept;host;x-amz-date, Signature=%s",
			date[:8], healthImagingRegion, sig),
	}
}

// healthImagingError answers like an AWS JSON API does: the error type in
// a header and a message in the body [external: AWS error responses].
func healthImagingError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("x-amzn-ErrorType", typ)
	writeJSON(w, status, map[string]string{"message": msg})
}

// serveHealthImaging is GetDICOMInstance on the storage host: the signed
// headers must be sent as given and the signature must be younger than
// SignedRequestExpiry; the answer is the stored instance as
// application/dicom in its stored transfer syntax.
func (s *Server) serveHealthImaging(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		healthImagingError(w, 405, "ValidationException", "Method not allowed")
		return
	}
	auth := r.Header.Get("Authorization")
	_, sig, ok := strings.Cut(auth, "Signature=")
	if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 ") || !ok {
		healthImagingError(w, 403, "AccessDeniedException", "Missing Authentication Token")
		return
	}
	date := r.Header.Get("X-Amz-Date")
	want := s.sign("GET", r.URL.Path, r.URL.RawQuery, r.Header.Get("Accept"), date)
	if sig != want {
		healthImagingError(w, 403, "InvalidSignatureException", "The request signature we calculated does not match the signature you provided.")
		return
	}
	t, err := time.Parse("20060102T150405Z", date)
	s.mu.Lock()
	now := s.nowLocked()
	var in *dicomInstance
	setID := r.URL.Query().Get("imageSetId")
	for _, im := range s.st.images {
		if im.dicomSet != nil && im.imageSetID == setID {
			for _, c := range im.dicomSet.instances {
				if instancePath(im.dicomSet.study, im.dicomSet.series, c.sop) == r.URL.Path {
					in = c
				}
			}
		}
	}
	s.mu.Unlock()
	if err != nil || now.Sub(t) > SignedRequestExpiry {
		healthImagingError(w, 403, "InvalidSignatureException", "Signature expired: "+date+" is now earlier than "+now.Add(-SignedRequestExpiry).UTC().Format("20060102T150405Z"))
		return
	}
	if in == nil {
		healthImagingError(w, 404, "ResourceNotFoundException", "Instance not found")
		return
	}
	rc := in.content.reader()
	defer rc.Close()
	w.Header().Set("Content-Type", "application/dicom; transfer-syntax="+in.ts)
	w.Header().Set("Content-Length", strconv.FormatInt(in.content.size, 10))
	w.WriteHeader(200)
	copyTo(w, rc)
}

// ---- for tests ----

// DICOMInstance is one stored instance of a DICOM image set, as the fake's
// HealthImaging serves it.
type DICOMInstance struct {
	SOPInstanceUID string
	TransferSyntax string
	Content        []byte
}

// DICOMInstances returns the stored (de-identified) instances of a DICOM
// image set, in the order they were imported.
func (s *Server) DICOMInstances(imagePK string) ([]DICOMInstance, error) {
	s.mu.Lock()
	im := s.st.images[imagePK]
	var ins []*dicomInstance
	if im != nil && im.dicomSet != nil {
		ins = im.dicomSet.instances
	}
	s.mu.Unlock()
	if len(ins) == 0 {
		return nil, fmt.Errorf("gcapitest: image %s is not a DICOM image set", imagePK)
	}
	var out []DICOMInstance
	for _, in := range ins {
		r := in.content.reader()
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			return nil, fmt.Errorf("gcapitest: read instance %s of image %s: %w", in.sop, imagePK, err)
		}
		out = append(out, DICOMInstance{SOPInstanceUID: in.sop, TransferSyntax: in.ts, Content: b})
	}
	return out, nil
}

// AddDICOMImageSetValue imports files (DICOM Part-10, one instance each)
// as a DICOM image set named name, as the import of a DICOM Image Set
// value does (de-identification included), and makes it the item's value
// for the socket. It returns the image's pk; DICOMInstances returns what
// was stored.
func (s *Server) AddDICOMImageSetValue(itemPK, ifaceSlug, name string, files map[string][]byte) (string, error) {
	s.mu.Lock()
	_, _, err := s.itemIfaceLocked(itemPK, ifaceSlug)
	dir := filepath.Join("uploads", s.st.uuid())
	s.mu.Unlock()
	if err != nil {
		return "", err
	}
	var src []srcFile
	for i, fn := range sortedKeys(files) {
		b, err := s.writeBlob(filepath.Join(dir, strconv.Itoa(i)), fn, files[fn])
		if err != nil {
			return "", fmt.Errorf("gcapitest: store %s: %w", fn, err)
		}
		src = append(src, srcFile{name: fn, object: b})
	}
	set, msg := s.storeImageSet(src)
	if msg != "" {
		return "", fmt.Errorf("gcapitest: import DICOM image set %q: %s", name, msg)
	}
	var all []string
	for _, f := range src {
		all = append(all, f.object.segs...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	it, f, err := s.itemIfaceLocked(itemPK, ifaceSlug)
	if err != nil {
		return "", err
	}
	pk := s.st.uuid()
	content, err := s.linkBlob(filepath.Join("images", pk), name, all)
	if err != nil {
		return "", fmt.Errorf("gcapitest: store image set %q: %w", name, err)
	}
	im := &image{pk: pk, name: name, content: content, imageSetID: strings.ReplaceAll(s.st.uuid(), "-", ""),
		dicomSet: set, key: s.st.orderKey()}
	s.st.images[pk] = im
	it.setValue(s.newCIVLocked(f, func(c *civ) { c.image = pk }))
	it.key = s.st.orderKey()
	return pk, nil
}

// SampleDICOMFrames returns one DICOM Part-10 file of the sample series
// shape holding frames 4×4 8-bit frames: NumberOfFrames (0028,0008) set and
// the pixel data as long as the frames need. The SOP Instance UID is
// seriesUID + ".<n>".
func SampleDICOMFrames(seed int64, frames, n int, studyUID, seriesUID string) []byte {
	b := dicomFile(seed, studyUID, seriesUID, SampleSOPClass, fmt.Sprintf("%s.%d", seriesUID, n), "", n)
	// The sample is explicit VR little endian: rebuild it with the two
	// elements changed.
	d := &dcmReader{b: b, pos: 132, explicit: true}
	var els []rawElement
	for !d.done() {
		start := d.pos
		tag, _, ok := d.next()
		if !ok {
			return nil
		}
		els = append(els, rawElement{tag, b[start:d.pos]})
	}
	els = setElement(els, 0x00280008, encodeElement(0x00280008, "IS", strconv.Itoa(frames), true))
	var px bytes.Buffer
	elem(&px, 0x7FE0, 0x0010, "OB", sampleVoxels(seed, 16*frames))
	els = setElement(els, 0x7FE00010, px.Bytes())
	out := append([]byte(nil), b[:132]...)
	for _, e := range els {
		out = append(out, e.raw...)
	}
	return out
}
