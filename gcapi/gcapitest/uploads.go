package gcapitest

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

func (a *apiReq) createUpload() {
	var body struct {
		Filename *string `json:"filename"`
	}
	if !a.decode(&body) {
		return
	}
	if body.Filename != nil {
		// DRF trims before the blank, length and basename checks.
		*body.Filename = trimDRF(*body.Filename)
	}
	switch {
	case body.Filename == nil:
		fieldErr(a.w, "filename", "This field is required.")
		return
	case *body.Filename == "":
		fieldErr(a.w, "filename", "This field may not be blank.")
		return
	case len([]rune(*body.Filename)) > 128:
		fieldErr(a.w, "filename", "Ensure this field has no more than 128 characters.")
		return
	case path.Base(*body.Filename) != *body.Filename || strings.Contains(*body.Filename, "/"):
		fieldErr(a.w, "filename", *body.Filename+" is not a valid filename")
		return
	}
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	// uploads/serializers.py UserUploadCreateSerializer.validate: more than
	// 2000 uploads of the user, whatever their status, refuse a new one.
	if len(s.st.uploads) > s.opts.MaxUploads {
		fieldErr(a.w, "non_field_errors", "You have created too many uploads. Please try again later.")
		return
	}
	u := &upload{
		pk: s.st.uuid(), filename: *body.Filename, status: "Initialized",
		// Django keeps microseconds; DRF renders them in "created".
		created: s.nowLocked().Truncate(time.Microsecond), parts: map[int]*part{}, key: s.st.orderKey(),
	}
	u.s3id = s.s3UploadID()
	s.st.uploads[u.pk] = u
	writeJSON(a.w, 201, s.uploadJSON(u))
}

// s3Alphabet is what S3 UploadIds are made of.
const s3Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"

// s3UploadID makes an UploadId as S3 does (the server stores what
// CreateMultipartUpload answered, grand-challenge.org
// app/grandchallenge/uploads/models.py UserUpload.create_multipart_upload):
// opaque, long, of letters, digits, ".", "_" and "-" in any order. Every id
// holds "..", "_" and "-" somewhere, so a client that checks URL paths by
// substring, not by segment, fails at once.
func (s *Server) s3UploadID() string {
	r := s.st.rnd
	b := make([]byte, 96+r.IntN(48))
	for i := range b {
		b[i] = s3Alphabet[r.IntN(len(s3Alphabet))]
	}
	at := 1 + r.IntN(len(b)-4)
	copy(b[at:], "..")
	b[(at+2+r.IntN(len(b)-at-2))%len(b)] = '_'
	b[r.IntN(at)] = '-'
	return string(b)
}

func (a *apiReq) listUploads() {
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	var res []any
	var keys []uint64
	if a.user != 0 {
		for _, u := range s.st.uploads {
			res = append(res, s.uploadJSON(u))
			keys = append(keys, u.key)
		}
	}
	a.page(res, keys)
}

func (a *apiReq) getUpload(pk string) {
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.st.uploads[pk]
	if !ok || a.user == 0 {
		notFound(a.w)
		return
	}
	writeJSON(a.w, 200, s.uploadJSON(u))
}

// lookupUpload finds an upload for one of the s3_upload_id actions. Caller
// holds mu.
func (a *apiReq) lookupUpload(pk, s3id string) *upload {
	u, ok := a.s.st.uploads[pk]
	if !ok || a.user == 0 || u.s3id == "" || u.s3id != s3id {
		notFound(a.w)
		return nil
	}
	return u
}

func (a *apiReq) presign(pk, s3id string) {
	var body struct {
		PartNumbers *[]json.RawMessage `json:"part_numbers"`
	}
	if !a.decode(&body) {
		return
	}
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	u := a.lookupUpload(pk, s3id)
	if u == nil {
		return
	}
	// The quota comes first, before the body is validated
	// (grand-challenge.org app/grandchallenge/uploads/views.py
	// UserUploadViewSet.generate_presigned_urls): UserUpload.can_upload_more
	// wants this upload's parts so far plus the user's completed, not yet
	// consumed uploads to stay below the quota. Uploads count until an import
	// consumes them or the hourly cleanup deletes them; one batch of URLs may
	// overshoot.
	if u.status != "Initialized" || u.partsSize()+s.completedBytesLocked() >= s.opts.QuotaBytes {
		detail(a.w, 403, "Upload limit reached")
		return
	}
	if body.PartNumbers == nil {
		fieldErr(a.w, "non_field_errors", "The `part_numbers` field is required")
		return
	}
	nums := make([]int, 0, len(*body.PartNumbers))
	errs := map[string][]string{}
	for i, raw := range *body.PartNumbers {
		n, err := strconv.Atoi(strings.Trim(string(raw), `"`))
		switch {
		case err != nil:
			errs[strconv.Itoa(i)] = []string{"A valid integer is required."}
		case n < 1:
			errs[strconv.Itoa(i)] = []string{"Ensure this value is greater than or equal to 1."}
		case n > 10000:
			errs[strconv.Itoa(i)] = []string{"Ensure this value is less than or equal to 10000."}
		}
		nums = append(nums, n)
	}
	if len(errs) > 0 {
		writeJSON(a.w, 400, map[string]any{"part_numbers": errs})
		return
	}
	urls := map[string]string{}
	now := s.nowLocked()
	for _, n := range nums {
		urls[strconv.Itoa(n)] = s.presignedURL(u, n, now)
	}
	writeJSON(a.w, 200, UploadPresigned{Upload: s.uploadJSON(u), PresignedURLs: urls})
}

// completedBytesLocked is what the user keeps in S3: completed uploads not
// yet consumed.
func (s *Server) completedBytesLocked() int64 {
	var n int64
	for _, u := range s.st.uploads {
		if u.status == "Completed" && u.object != nil {
			n += u.object.size
		}
	}
	return n
}

func (s *Server) sign(parts ...string) string {
	m := hmac.New(sha256.New, s.signKey)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil))
}

func (s *Server) presignedURL(u *upload, n int, now time.Time) string {
	p := fmt.Sprintf("/s3/uploads/%d/%s", userPK, u.pk)
	date := strconv.FormatInt(now.Unix(), 10)
	exp := strconv.Itoa(int(s.opts.PresignExpiry / time.Second))
	q := url.Values{}
	q.Set("uploadId", u.s3id)
	q.Set("partNumber", strconv.Itoa(n))
	q.Set("X-Amz-Date", date)
	q.Set("X-Amz-Expires", exp)
	q.Set("X-Amz-Signature", s.sign("PUT", p, u.s3id, strconv.Itoa(n), date, exp))
	return s.StorageURL + p + "?" + q.Encode()
}

// s3Error answers like S3 does, in XML.
func s3Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code><Message>%s</Message></Error>", code, msg)
}

// servePart is the presigned part PUT, served like S3: the body is
// streamed to disk while its MD5 is computed, and the ETag is the quoted
// MD5 hex.
func (s *Server) servePart(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut {
		s3Error(w, 405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
		return
	}
	q := r.URL.Query()
	upk := path.Base(r.URL.Path)
	s3id, pn, date, exp := q.Get("uploadId"), q.Get("partNumber"), q.Get("X-Amz-Date"), q.Get("X-Amz-Expires")
	want := s.sign("PUT", r.URL.Path, s3id, pn, date, exp)
	if !hmac.Equal([]byte(want), []byte(q.Get("X-Amz-Signature"))) {
		s3Error(w, 403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
		return
	}
	d, _ := strconv.ParseInt(date, 10, 64)
	e, _ := strconv.ParseInt(exp, 10, 64)
	if s.Now().After(time.Unix(d+e, 0)) {
		s3Error(w, 403, "AccessDenied", "Request has expired")
		return
	}
	n, err := strconv.Atoi(pn)
	if err != nil || n < 1 || n > 10000 {
		s3Error(w, 400, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive")
		return
	}
	if r.ContentLength > MaxPartSize {
		s3Error(w, 400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
		return
	}
	if r.ContentLength < 0 {
		s3Error(w, 411, "MissingContentLength", "You must provide the Content-Length HTTP header.")
		return
	}
	s.mu.Lock()
	u, ok := s.st.uploads[upk]
	live := ok && u.status == "Initialized" && u.s3id == s3id
	var seq int
	if live {
		u.seq++
		seq = u.seq
	}
	s.mu.Unlock()
	if !live {
		s3Error(w, 404, "NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.")
		return
	}
	dir := filepath.Join(s.opts.StoreDir, "uploads", upk)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		s3Error(w, 500, "InternalError", "We encountered an internal error. Please try again.")
		return
	}
	fpath := filepath.Join(dir, fmt.Sprintf("part-%05d-%d", n, seq))
	f, err := os.Create(fpath)
	if err != nil {
		s3Error(w, 500, "InternalError", "We encountered an internal error. Please try again.")
		return
	}
	h := md5.New()
	got, err := copyTo(io.MultiWriter(f, h), r.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil || got != r.ContentLength {
		os.Remove(fpath)
		s3Error(w, 400, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header.")
		return
	}
	etag := `"` + hex.EncodeToString(h.Sum(nil)) + `"`
	s.mu.Lock()
	u, ok = s.st.uploads[upk]
	if !ok || u.status != "Initialized" || u.s3id != s3id {
		s.mu.Unlock()
		os.Remove(fpath)
		s3Error(w, 404, "NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.")
		return
	}
	if old := u.parts[n]; old != nil {
		os.Remove(old.path)
	}
	u.parts[n] = &part{etag: etag, size: got, modified: s.nowLocked(), path: fpath}
	s.mu.Unlock()
	w.Header().Set("ETag", etag)
	w.WriteHeader(200)
}

func (a *apiReq) listParts(pk, s3id string) {
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	u := a.lookupUpload(pk, s3id)
	if u == nil {
		return
	}
	if u.status != "Initialized" {
		serverError(a.w) // RuntimeError in UserUpload.list_parts
		return
	}
	parts := []Part{}
	for _, p := range u.sortedParts() {
		// S3 ListParts gives LastModified to the millisecond.
		parts = append(parts, Part{ETag: p.etag, PartNumber: p.n, Size: p.size, LastModified: p.modified.UTC().Truncate(time.Millisecond)})
	}
	writeJSON(a.w, 200, UploadParts{Upload: s.uploadJSON(u), Parts: parts})
}

func (a *apiReq) complete(pk, s3id string) {
	var body struct {
		Parts *[]struct {
			ETag       *string `json:"ETag"`
			PartNumber *int    `json:"PartNumber"`
		} `json:"parts"`
	}
	if !a.decode(&body) {
		return
	}
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	u := a.lookupUpload(pk, s3id)
	if u == nil {
		return
	}
	if body.Parts == nil {
		// The view validates with partial=True, so the serializer's own
		// validate() reports it (uploads/serializers.py UserUploadCompleteSerializer).
		fieldErr(a.w, "non_field_errors", "The `parts` field is required")
		return
	}
	if u.status != "Initialized" {
		serverError(a.w) // RuntimeError in UserUpload.complete_multipart_upload
		return
	}
	// S3 refusing the list is a botocore ClientError that nothing in
	// UserUploadCompleteSerializer.save or the view catches: Django answers
	// 500, not 400 (grand-challenge.org app/grandchallenge/uploads/views.py
	// UserUploadViewSet.complete_multipart_upload). The upload stays
	// Initialized, its parts kept.
	s3err := func(code, msg string) {
		s.log.Info("gcapitest: complete refused by S3", "upload", u.pk, "code", code, "message", msg)
		serverError(a.w)
	}
	list := *body.Parts
	if len(list) == 0 {
		s3err("MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema")
		return
	}
	blobv := &blob{name: u.filename}
	used := map[int]bool{}
	prev := 0
	for i, p := range list {
		if p.ETag == nil || p.PartNumber == nil {
			s3err("MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema")
			return
		}
		if *p.PartNumber <= prev {
			s3err("InvalidPartOrder", "The list of parts was not in ascending order. Parts must be ordered by part number.")
			return
		}
		prev = *p.PartNumber
		stored := u.parts[*p.PartNumber]
		if stored == nil || strings.Trim(stored.etag, `"`) != strings.Trim(*p.ETag, `"`) {
			s3err("InvalidPart", "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.")
			return
		}
		if i < len(list)-1 && stored.size < MinPartSize {
			s3err("EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size")
			return
		}
		used[*p.PartNumber] = true
		blobv.segs = append(blobv.segs, stored.path)
		blobv.size += stored.size
	}
	for n, p := range u.parts {
		if !used[n] {
			os.Remove(p.path) // S3 drops parts left out of the list
		}
	}
	u.parts = nil
	u.object = blobv
	u.status = "Completed"
	u.key = s.st.orderKey()
	writeJSON(a.w, 200, s.uploadJSON(u))
}

func (a *apiReq) abort(pk, s3id string) {
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	u := a.lookupUpload(pk, s3id)
	if u == nil {
		return
	}
	if u.status != "Initialized" {
		serverError(a.w) // RuntimeError in UserUpload.abort_multipart_upload
		return
	}
	for _, p := range u.parts {
		os.Remove(p.path)
	}
	u.parts = nil
	u.status = "Aborted"
	u.s3id = ""
	u.key = s.st.orderKey()
	writeJSON(a.w, 200, s.uploadJSON(u))
}

// expireLocked deletes uploads older than UploadLifetime, whatever their
// status, and their bytes, as the server's cleanup does. It runs at every
// full hour (CELERY_BEAT_SCHEDULE delete_old_user_uploads, grand-challenge.org
// app/grandchallenge/uploads/tasks.py), so an upload lives between 24 and
// 25 hours: the cut is taken at the last full hour of the fake clock.
func (s *Server) expireLocked() {
	cut := s.nowLocked().Truncate(time.Hour).Add(-UploadLifetime)
	for pk, u := range s.st.uploads {
		if u.created.Before(cut) {
			s.deleteUploadLocked(pk)
		}
	}
}

func (s *Server) deleteUploadLocked(pk string) {
	u, ok := s.st.uploads[pk]
	if !ok {
		return
	}
	for _, p := range u.parts {
		os.Remove(p.path)
	}
	if u.object != nil {
		for _, p := range u.object.segs {
			os.Remove(p)
		}
	}
	os.Remove(filepath.Join(s.opts.StoreDir, "uploads", pk))
	delete(s.st.uploads, pk)
}

// sortedUploadPKs is used where a deterministic order matters.
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
