package gcapitest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"detail":"gcapitest: cannot encode response"}`)
		status = 500
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

func detail(w http.ResponseWriter, status int, msg string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", "Bearer")
	}
	writeJSON(w, status, map[string]string{"detail": msg})
}

func notFound(w http.ResponseWriter) { detail(w, 404, "Not found.") }

// serverError answers like Django does for an unhandled exception.
func serverError(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(500)
	w.Write([]byte("<h1>Server Error (500)</h1>"))
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allow ...string) {
	w.Header().Set("Allow", strings.Join(allow, ", "))
	detail(w, 405, fmt.Sprintf("Method %q not allowed.", r.Method))
}

func fieldErr(w http.ResponseWriter, field string, msgs ...string) {
	writeJSON(w, 400, map[string][]string{field: msgs})
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	storagePath := strings.HasPrefix(p, "/s3/") || strings.HasPrefix(p, "/s3media/") || strings.HasPrefix(p, "/healthimaging/")
	if !s.opts.StorageOnAPIHost && storagePath != onStorageHost(r) {
		// Each host serves only its own paths.
		if onStorageHost(r) {
			s3Error(w, 404, "NoSuchKey", "The specified key does not exist.")
			return
		}
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(404)
		w.Write([]byte("<h1>Not Found</h1>"))
		return
	}
	switch {
	case strings.HasPrefix(p, "/s3/"):
		s.servePart(w, r)
		return
	case strings.HasPrefix(p, "/s3media/"):
		s.serveSignedMedia(w, r)
		return
	case strings.HasPrefix(p, "/healthimaging/"):
		s.serveHealthImaging(w, r)
		return
	case strings.HasPrefix(p, "/media/"):
		s.serveMedia(w, r)
		return
	case !strings.HasPrefix(p, "/api/v1/") && p != "/api/v1":
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(404)
		w.Write([]byte("<h1>Not Found</h1>"))
		return
	}
	if !strings.HasSuffix(p, "/") {
		// Django's APPEND_SLASH: a redirected POST or PATCH loses its body.
		loc := p + "/"
		if r.URL.RawQuery != "" {
			loc += "?" + r.URL.RawQuery
		}
		http.Redirect(w, r, loc, http.StatusMovedPermanently)
		return
	}
	s.mu.Lock()
	s.expireLocked()
	s.mu.Unlock()

	user, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	safe := r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions
	if !safe && user == 0 {
		detail(w, 401, "Authentication credentials were not provided.")
		return
	}
	seg := apiSegments(p)
	a := &apiReq{s: s, w: w, r: r, user: user}
	switch {
	case len(seg) == 1 && seg[0] == "gcapi":
		if r.Method != http.MethodGet {
			methodNotAllowed(w, r, "GET")
			return
		}
		writeJSON(w, 200, map[string]string{"latest_version": "0.15.1", "lowest_supported_version": "0.13.0"})
	case len(seg) == 1 && seg[0] == "archives":
		a.only("GET", a.listArchives)
	case len(seg) == 2 && seg[0] == "archives" && seg[1] == "items":
		switch r.Method {
		case "GET":
			a.listItems()
		case "POST":
			a.createItem()
		default:
			methodNotAllowed(w, r, "GET", "POST")
		}
	case len(seg) == 2 && seg[0] == "archives":
		a.only("GET", func() { a.getArchive(seg[1]) })
	case len(seg) == 3 && seg[0] == "archives" && seg[1] == "items":
		switch r.Method {
		case "GET":
			a.getItem(seg[2])
		case "PATCH":
			a.updateItem(seg[2], true)
		case "PUT":
			a.updateItem(seg[2], false)
		default:
			methodNotAllowed(w, r, "GET", "PUT", "PATCH")
		}
	case len(seg) == 2 && seg[0] == "components" && seg[1] == "interfaces":
		a.only("GET", a.listInterfaces)
	case len(seg) == 3 && seg[0] == "components" && seg[1] == "interfaces":
		a.only("GET", func() { a.getInterface(seg[2]) })
	case len(seg) == 1 && seg[0] == "uploads":
		switch r.Method {
		case "GET":
			a.listUploads()
		case "POST":
			a.createUpload()
		default:
			methodNotAllowed(w, r, "GET", "POST")
		}
	case len(seg) == 2 && seg[0] == "uploads":
		a.only("GET", func() { a.getUpload(seg[1]) })
	case len(seg) == 4 && seg[0] == "uploads":
		switch seg[3] {
		case "generate-presigned-urls":
			a.only("PATCH", func() { a.presign(seg[1], seg[2]) })
		case "complete-multipart-upload":
			a.only("PATCH", func() { a.complete(seg[1], seg[2]) })
		case "abort-multipart-upload":
			a.only("PATCH", func() { a.abort(seg[1], seg[2]) })
		case "list-parts":
			a.only("GET", func() { a.listParts(seg[1], seg[2]) })
		default:
			notFound(w)
		}
	case len(seg) == 2 && seg[0] == "cases" && seg[1] == "upload-sessions":
		a.only("GET", a.listSessions)
	case len(seg) == 3 && seg[0] == "cases" && seg[1] == "upload-sessions":
		a.only("GET", func() { a.getSession(seg[2]) })
	case len(seg) == 2 && seg[0] == "cases" && seg[1] == "images":
		a.only("GET", a.listImages)
	case len(seg) == 3 && seg[0] == "cases" && seg[1] == "images":
		a.only("GET", func() { a.getImage(seg[2]) })
	case len(seg) == 5 && seg[0] == "cases" && seg[1] == "images" && seg[3] == "dicom" && seg[4] == "instances":
		a.only("GET", func() { a.dicomInstances(seg[2]) })
	default:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(404)
		w.Write([]byte("<h1>Not Found</h1>"))
	}
}

// authenticate applies DRF's TokenAuthentication with keyword Bearer. It
// returns the user pk (0 = anonymous) or writes a 401 and returns false.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (int, bool) {
	h := r.Header.Get("Authorization")
	parts := strings.Fields(h)
	if len(parts) == 0 || !strings.EqualFold(parts[0], "Bearer") {
		return 0, true // another scheme is ignored: anonymous
	}
	switch {
	case len(parts) == 1:
		detail(w, 401, "Invalid token header. No credentials provided.")
		return 0, false
	case len(parts) > 2:
		detail(w, 401, "Invalid token header. Token string should not contain spaces.")
		return 0, false
	case parts[1] != s.opts.Token:
		detail(w, 401, "Invalid token.")
		return 0, false
	}
	return userPK, true
}

// apiReq is one API request being served.
type apiReq struct {
	s    *Server
	w    http.ResponseWriter
	r    *http.Request
	user int
}

func (a *apiReq) only(method string, f func()) {
	if a.r.Method != method {
		methodNotAllowed(a.w, a.r, method)
		return
	}
	f()
}

// decode reads a JSON object body the way DRF's JSONParser does.
func (a *apiReq) decode(v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(a.w, a.r.Body, 16<<20))
	if err := dec.Decode(v); err != nil {
		detail(a.w, 400, "JSON parse error - "+err.Error())
		return false
	}
	return true
}

func (a *apiReq) abs(path string) string { return a.s.URL + path }

// page answers a limit/offset paginated list. keys orders the results the
// way the database would: no order the client may rely on.
func (a *apiReq) page(results []any, keys []uint64) {
	idx := make([]int, len(results))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(x, y int) int {
		switch {
		case keys[x] < keys[y]:
			return -1
		case keys[x] > keys[y]:
			return 1
		}
		return 0
	})
	q := a.r.URL.Query()
	limit := positiveInt(q.Get("limit"), 100)
	if limit > 1000 {
		limit = 1000
	}
	offset := 0
	if n, err := strconv.Atoi(q.Get("offset")); err == nil && n > 0 {
		offset = n
	}
	out := []any{}
	for i := offset; i < len(idx) && i < offset+limit; i++ {
		out = append(out, results[idx[i]])
	}
	link := func(off int) *string {
		q2 := url.Values{}
		for k, v := range q {
			q2[k] = v
		}
		q2.Set("limit", strconv.Itoa(limit))
		if off <= 0 {
			q2.Del("offset")
		} else {
			q2.Set("offset", strconv.Itoa(off))
		}
		u := a.abs(a.r.URL.Path) + "?" + q2.Encode()
		return &u
	}
	var next, prev *string
	if offset+limit < len(idx) {
		next = link(offset + limit)
	}
	if offset > 0 {
		prev = link(offset - limit)
	}
	writeJSON(a.w, 200, map[string]any{"count": len(idx), "next": next, "previous": prev, "results": out})
}

func positiveInt(s string, def int) int {
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return def
	}
	return n
}

// hyperlink resolves an absolute or relative API URL to the pk of the
// route with the given prefix (e.g. "/api/v1/uploads/"), like DRF's
// HyperlinkedRelatedField: the host is ignored.
func hyperlink(raw json.RawMessage, prefix string) (string, string) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", "Incorrect type. Expected URL string, received " + jsonType(raw) + "."
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", "Invalid hyperlink - No URL match."
	}
	p := u.Path
	if !strings.HasPrefix(p, "/api/v1/") || !strings.HasSuffix(p, "/") {
		return "", "Invalid hyperlink - No URL match."
	}
	rest, ok := strings.CutPrefix(p, prefix)
	if !ok || rest == "/" || strings.Count(rest, "/") != 1 {
		return "", "Invalid hyperlink - Incorrect URL match."
	}
	return strings.TrimSuffix(rest, "/"), ""
}

func jsonType(raw json.RawMessage) string {
	t := strings.TrimSpace(string(raw))
	switch {
	case t == "null":
		return "NoneType"
	case t == "true" || t == "false":
		return "bool"
	case strings.HasPrefix(t, "{"):
		return "dict"
	case strings.HasPrefix(t, "["):
		return "list"
	case strings.HasPrefix(t, `"`):
		return "str"
	case strings.ContainsAny(t, ".eE"):
		return "float"
	}
	return "int"
}

// ---- JSON shapes ----

// rawJSON returns a constant JSON literal as a RawMessage.
func rawJSON(s string) json.RawMessage { return json.RawMessage(s) }

func (s *Server) archiveURL(pk string) string { return s.URL + "/api/v1/archives/" + pk + "/" }

func (s *Server) archiveJSON(ar *archive) Archive {
	return Archive{
		PK: ar.pk, Title: ar.title, Description: "",
		// Archive.logo is a required ImageField: always a media URL.
		Logo:   s.URL + "/media/logos/archive/" + ar.pk + "/logo.png",
		APIURL: s.archiveURL(ar.pk),
		URL:    s.URL + "/archives/" + ar.slug + "/",
	}
}

func (s *Server) ifaceJSON(f *iface) Interface {
	return Interface{
		PK: f.pk, Title: f.title, Description: "", Slug: f.slug, Kind: f.kind,
		SuperKind: f.superKind, RelativePath: f.relPath, DefaultValue: rawJSON("null"),
		OverlaySegments: rawJSON("[]"), LookUpTable: rawJSON("null"),
	}
}

func (s *Server) uploadJSON(u *upload) Upload {
	return Upload{
		PK: u.pk, Created: u.created.UTC(), Filename: u.filename,
		Key: fmt.Sprintf("uploads/%d/%s", userPK, u.pk), S3UploadID: u.s3id,
		Status: u.status, APIURL: s.uploadURL(u.pk),
	}
}

func (s *Server) uploadURL(pk string) string { return s.URL + "/api/v1/uploads/" + pk + "/" }

func (s *Server) imageURL(pk string) string { return s.URL + "/api/v1/cases/images/" + pk + "/" }

func (s *Server) imageJSON(im *image) Image {
	out := Image{
		PK: im.pk, Name: im.name, APIURL: s.imageURL(im.pk), Files: []ImageFile{},
		Width: im.w, Height: im.h, Depth: im.d, ColorSpace: "GRAY", Modality: rawJSON("null"),
		EyeChoice: "NA", Segments: rawJSON("null"),
		StudyInstanceUID: im.study, SeriesInstanceUID: im.series,
	}
	// shape is (depth, height, width) without the unknown ones
	// (cases/models.py Image.shape_without_color).
	for _, n := range []*int{im.d, im.h, im.w} {
		if n != nil {
			out.ShapeWithoutColor = append(out.ShapeWithoutColor, *n)
		}
	}
	if out.ShapeWithoutColor == nil {
		out.ShapeWithoutColor = []int{}
	}
	out.Shape = out.ShapeWithoutColor
	if im.imageSetID != "" {
		// A DICOM image set lives in AWS HealthImaging: no image files.
		out.DICOMImageSet = &DICOMImageSet{ImageSetID: im.imageSetID}
		return out
	}
	// ImageFileSerializer is a plain ModelSerializer: image is the image's
	// pk, not a URL (cases/serializers.py).
	out.Files = []ImageFile{{
		PK: im.filePK, Image: im.pk, ImageType: im.typ,
		File: s.imageFileURL(im, imageFileName(im)),
	}}
	return out
}

func (s *Server) fileURL(v *civ) string {
	return s.URL + "/media/" + civFileKey(v)
}

// civJSON renders a value in the GET form (the socket object).
func (s *Server) civJSON(v *civ) ItemValue {
	m := ItemValue{PK: v.pk, Value: rawJSON("null"), Interface: s.ifaceJSON(v.iface)}
	if v.value != nil {
		m.Value = append(json.RawMessage(nil), v.value...)
	}
	if v.file != nil {
		u := s.fileURL(v)
		m.File = &u
	}
	if v.image != "" {
		u := s.imageURL(v.image)
		m.Image = &u
	}
	return m
}

func (s *Server) itemJSON(it *item) ArchiveItem {
	vals := []ItemValue{}
	for _, v := range it.values {
		vals = append(vals, s.civJSON(v))
	}
	return ArchiveItem{
		PK: it.pk, Title: it.title, Archive: s.archiveURL(it.archive), Values: vals,
		HangingProtocol: rawJSON("null"), OptionalHangingProtocols: rawJSON("[]"), ViewContent: rawJSON("{}"),
	}
}

// itemPostJSON is the answer to POST and PATCH/PUT: values name the socket
// by slug (ComponentInterfaceValuePostSerializer).
func (s *Server) itemPostJSON(it *item) ArchiveItemPost {
	vals := []ItemValuePost{}
	for _, v := range it.values {
		g := s.civJSON(v)
		vals = append(vals, ItemValuePost{Interface: v.iface.slug, Value: g.Value, File: g.File, Image: g.Image, PK: g.PK})
	}
	return ArchiveItemPost{
		PK: it.pk, Title: it.title, Archive: s.archiveURL(it.archive), Values: vals,
		HangingProtocol: rawJSON("null"), OptionalHangingProtocols: rawJSON("[]"), ViewContent: rawJSON("{}"),
	}
}

func (s *Server) sessionJSON(se *session) UploadSession {
	out := UploadSession{
		PK: se.pk, Creator: userPK, Status: se.status, ErrorMessage: se.errMsg,
		ImageSet: []string{}, APIURL: s.URL + "/api/v1/cases/upload-sessions/" + se.pk + "/",
		UserUploads: []string{}, Uploads: []string{},
	}
	for _, pk := range se.imageSet {
		out.ImageSet = append(out.ImageSet, s.imageURL(pk))
	}
	for _, pk := range se.uploads {
		if _, ok := s.st.uploads[pk]; ok { // the relation empties as uploads are deleted
			out.UserUploads = append(out.UserUploads, pk)
			out.Uploads = append(out.Uploads, s.uploadURL(pk))
		}
	}
	return out
}

// ---- archives, interfaces, sessions, images ----

// canViewArchive applies view_archive: public archives to everyone, the
// others to the users the archive gave a role.
func canViewArchive(ar *archive, user int) bool {
	switch ar.access {
	case AccessPublic:
		return true
	case AccessUpload, AccessView:
		return user != 0
	}
	return false
}

// canViewItems applies view_archiveitem, which only the archive's groups
// (editors, uploaders, users) get.
func canViewItems(ar *archive, user int) bool {
	return user != 0 && (ar.access == AccessUpload || ar.access == AccessView)
}

func (a *apiReq) listArchives() {
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	var res []any
	var keys []uint64
	slug := a.r.URL.Query().Get("slug")
	for _, ar := range s.st.archives {
		if canViewArchive(ar, a.user) && (slug == "" || ar.slug == slug) {
			res = append(res, s.archiveJSON(ar))
			keys = append(keys, ar.key)
		}
	}
	a.page(res, keys)
}

func (a *apiReq) getArchive(pk string) {
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	ar, ok := s.st.archives[pk]
	if !ok || !canViewArchive(ar, a.user) {
		notFound(a.w)
		return
	}
	writeJSON(a.w, 200, s.archiveJSON(ar))
}

// Sockets need an authenticated user: ComponentInterfaceViewSet has
// permission_classes = [IsAuthenticated] (grand-challenge.org
// app/grandchallenge/components/views.py), so the anonymous user gets 401.
func (a *apiReq) listInterfaces() {
	if a.user == 0 {
		detail(a.w, 401, "Authentication credentials were not provided.")
		return
	}
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	var res []any
	var keys []uint64
	slug := a.r.URL.Query().Get("slug")
	for _, f := range s.st.ifaces {
		if slug == "" || f.slug == slug {
			res = append(res, s.ifaceJSON(f))
			keys = append(keys, uint64(f.pk))
		}
	}
	a.page(res, keys)
}

func (a *apiReq) getInterface(pk string) {
	if a.user == 0 {
		detail(a.w, 401, "Authentication credentials were not provided.")
		return
	}
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.st.ifaces {
		if strconv.Itoa(f.pk) == pk {
			writeJSON(a.w, 200, s.ifaceJSON(f))
			return
		}
	}
	notFound(a.w)
}

// listSessions lists every session of the user. RawImageUploadSessionViewSet
// (grand-challenge.org app/grandchallenge/cases/views.py) declares no
// filterset, so query parameters other than limit and offset are ignored,
// and no code deletes a session: the list only grows.
func (a *apiReq) listSessions() {
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	var res []any
	var keys []uint64
	if a.user != 0 {
		for _, se := range s.st.sessions {
			res = append(res, s.sessionJSON(se))
			keys = append(keys, se.key)
		}
	}
	a.page(res, keys)
}

func (a *apiReq) getSession(pk string) {
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	se, ok := s.st.sessions[pk]
	if !ok || a.user == 0 {
		notFound(a.w)
		return
	}
	writeJSON(a.w, 200, s.sessionJSON(se))
}

func (a *apiReq) listImages() {
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	q := a.r.URL.Query()
	var inArchive map[string]bool
	if arcs := q["archive"]; len(arcs) > 0 {
		inArchive = map[string]bool{}
		for _, ap := range arcs {
			if _, ok := s.st.archives[ap]; !ok {
				fieldErr(a.w, "archive", "Select a valid choice. "+ap+" is not one of the available choices.")
				return
			}
			for _, it := range s.st.items {
				if it.archive == ap {
					for _, v := range it.values {
						if v.image != "" {
							inArchive[v.image] = true
						}
					}
				}
			}
		}
	}
	origin := q.Get("origin")
	var res []any
	var keys []uint64
	if a.user != 0 {
		for _, im := range s.st.images {
			if inArchive != nil && !inArchive[im.pk] {
				continue
			}
			if origin != "" && im.origin != origin {
				continue
			}
			res = append(res, s.imageJSON(im))
			keys = append(keys, im.key)
		}
	}
	a.page(res, keys)
}

func (a *apiReq) getImage(pk string) {
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	im, ok := s.st.images[pk]
	if !ok || a.user == 0 {
		notFound(a.w)
		return
	}
	writeJSON(a.w, 200, s.imageJSON(im))
}
