package gcapitest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
)

func (a *apiReq) listItems() {
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	arc := a.r.URL.Query().Get("archive")
	if arc != "" {
		if _, ok := s.st.archives[arc]; !ok {
			fieldErr(a.w, "archive", "Select a valid choice. That choice is not one of the available choices.")
			return
		}
	}
	var res []any
	var keys []uint64
	for _, it := range s.st.items {
		if (arc == "" || it.archive == arc) && canViewItems(s.st.archives[it.archive], a.user) {
			res = append(res, s.itemJSON(it))
			keys = append(keys, it.key)
		}
	}
	a.page(res, keys)
}

func (a *apiReq) getItem(pk string) {
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.st.items[pk]
	if !ok || !canViewItems(s.st.archives[it.archive], a.user) {
		notFound(a.w)
		return
	}
	writeJSON(a.w, 200, s.itemJSON(it))
}

// titleTakenLocked reports whether another item of the archive has the
// non-empty title (the conditional unique constraint), from an index as
// the database's: a look-up costs the same in an archive of any size.
func (s *Server) titleTakenLocked(archivePK, title, except string) bool {
	if title == "" {
		return false
	}
	n := s.st.titled[titleKey(archivePK, title)]
	if it := s.st.items[except]; it != nil && it.archive == archivePK && it.title == title {
		n--
	}
	return n > 0
}

func (a *apiReq) createItem() {
	var body struct {
		Archive *json.RawMessage  `json:"archive"`
		Title   *string           `json:"title"`
		Values  []json.RawMessage `json:"values"`
	}
	if !a.decode(&body) {
		return
	}
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if body.Archive == nil {
		fieldErr(a.w, "archive", "This field is required.")
		return
	}
	apk, msg := hyperlink(*body.Archive, "/api/v1/archives/")
	if msg == "" {
		// The field's queryset holds only archives the user may upload to
		// (ArchiveItemPostSerializer: upload_archive), so an archive the
		// user can merely view "does not exist".
		if ar, ok := s.st.archives[apk]; !ok || ar.access != AccessUpload {
			msg = "Invalid hyperlink - Object does not exist."
		}
	}
	if msg != "" {
		fieldErr(a.w, "archive", msg)
		return
	}
	title := ""
	if body.Title != nil {
		title = trimDRF(*body.Title)
	}
	if len([]rune(title)) > 255 {
		fieldErr(a.w, "title", "Ensure this field has no more than 255 characters.")
		return
	}
	if s.titleTakenLocked(apk, title, "") {
		fieldErr(a.w, "non_field_errors", "The fields title, archive must make a unique set.")
		return
	}
	if len(body.Values) > 0 {
		writeJSON(a.w, 400, []string{"Values can only be added via update"})
		return
	}
	it := &item{pk: s.st.uuid(), title: title, archive: apk, key: s.st.orderKey()}
	s.st.addItem(it)
	writeJSON(a.w, 201, s.itemPostJSON(it))
}

// trimDRF trims a CharField's input as DRF does (trim_whitespace=True:
// Python's str.strip(), rest_framework/fields.py CharField.to_internal_value)
// before any length or uniqueness check.
func trimDRF(v string) string { return strings.TrimSpace(v) }

const possibleKeys = "['image', 'value', 'file', 'user_upload', 'upload_session', ('image_name', 'user_uploads')]"

// plannedValue is one validated entry of a PATCH, applied only when every
// entry validated.
type plannedValue struct {
	iface   *iface
	source  string // a key of the entry, or "dicom" for user_uploads + image_name
	value   json.RawMessage
	image   string
	uploads []string
	name    string // image_name
}

func (a *apiReq) updateItem(pk string, partial bool) {
	var body struct {
		Title  *string            `json:"title"`
		Values *[]json.RawMessage `json:"values"`
	}
	if !a.decode(&body) {
		return
	}
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.st.items[pk]
	if !ok || !canViewItems(s.st.archives[it.archive], a.user) {
		notFound(a.w)
		return
	}
	if s.st.archives[it.archive].access != AccessUpload {
		// Viewers lack change_archiveitem (DjangoObjectPermissions).
		detail(a.w, 403, "You do not have permission to perform this action.")
		return
	}
	if body.Title != nil {
		*body.Title = trimDRF(*body.Title)
		if len([]rune(*body.Title)) > 255 {
			fieldErr(a.w, "title", "Ensure this field has no more than 255 characters.")
			return
		}
		if s.titleTakenLocked(it.archive, *body.Title, it.pk) {
			fieldErr(a.w, "non_field_errors", "The fields title, archive must make a unique set.")
			return
		}
	}
	var entries []json.RawMessage
	if body.Values != nil {
		entries = *body.Values
	}
	plans := make([]plannedValue, len(entries))
	errs := make([]map[string][]string, len(entries))
	bad := false
	seen := map[string]bool{}
	for i, raw := range entries {
		p, e := s.validateEntryLocked(raw)
		if e == nil && seen[p.iface.slug] {
			e = map[string][]string{"non_field_errors": {fmt.Sprintf("Socket %q is given more than once.", p.iface.slug)}}
		}
		if e != nil {
			bad = true
			errs[i] = e
			continue
		}
		errs[i] = map[string][]string{}
		seen[p.iface.slug] = true
		plans[i] = p
	}
	if bad {
		writeJSON(a.w, 400, map[string]any{"values": errs})
		return
	}
	// Everything validated: apply (the real server runs in one transaction).
	if body.Title != nil {
		s.st.retitle(it, *body.Title)
	}
	changed := body.Title != nil
	for _, p := range plans {
		switch p.source {
		case "value":
			if _, old := it.valueFor(p.iface.slug); old != nil && old.value != nil && jsonEqual(old.value, p.value) {
				continue
			}
			it.setValue(s.newCIVLocked(p.iface, func(v *civ) { v.value = p.value }))
			changed = true
		case "image":
			if _, old := it.valueFor(p.iface.slug); old != nil && old.image == p.image {
				continue
			}
			it.setValue(s.newCIVLocked(p.iface, func(v *civ) { v.image = p.image }))
			changed = true
		case "user_upload":
			s.st.jobs = append(s.st.jobs, &job{kind: jobFile, item: it.pk, iface: p.iface.slug, uploads: p.uploads, due: s.nowLocked().Add(s.opts.ImportDelay)})
		case "dicom":
			// Its own path: a DICOMImageSetUpload imported into AWS
			// HealthImaging, no RawImageUploadSession (components/models.py
			// CIVForObjectMixin._update_civ_for_image, dicom_upload_with_name).
			s.st.jobs = append(s.st.jobs, &job{kind: jobDICOM, item: it.pk, iface: p.iface.slug, uploads: p.uploads, name: p.name, due: s.nowLocked().Add(s.opts.ImportDelay)})
		case "user_uploads":
			// One server-made session per image value (components/models.py
			// CIVForObjectMixin._update_civ_for_image).
			se := &session{pk: s.st.uuid(), status: "Re-Queued", uploads: p.uploads, key: s.st.orderKey()}
			s.st.sessions[se.pk] = se
			s.st.jobs = append(s.st.jobs, &job{kind: jobImage, session: se.pk, item: it.pk, iface: p.iface.slug, uploads: p.uploads, due: s.nowLocked().Add(s.opts.ImportDelay)})
		}
	}
	if !partial {
		listed := map[string]bool{}
		for _, p := range plans {
			listed[p.iface.slug] = true
		}
		kept := it.values[:0]
		for _, v := range it.values {
			if listed[v.iface.slug] {
				kept = append(kept, v)
			} else {
				changed = true
			}
		}
		it.values = kept
	}
	if changed {
		it.key = s.st.orderKey()
	}
	writeJSON(a.w, 200, s.itemPostJSON(it))
	s.poke()
}

func (s *Server) newCIVLocked(f *iface, set func(*civ)) *civ {
	s.st.nextCIV++
	v := &civ{pk: s.st.nextCIV, iface: f}
	set(v)
	s.st.civs[v.pk] = v
	return v
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

// validateEntryLocked checks one value entry like
// ComponentInterfaceValuePostSerializer and the model's full_clean.
func (s *Server) validateEntryLocked(raw json.RawMessage) (plannedValue, map[string][]string) {
	nonField := func(msg string) (plannedValue, map[string][]string) {
		return plannedValue{}, map[string][]string{"non_field_errors": {msg}}
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nonField("Invalid data. Expected a dictionary, but got " + jsonType(raw) + ".")
	}
	ifRaw, ok := m["interface"]
	if !ok || string(ifRaw) == "null" {
		return nonField("An interface must be specified")
	}
	var slug string
	if json.Unmarshal(ifRaw, &slug) != nil {
		return plannedValue{}, map[string][]string{"interface": {"Invalid value."}}
	}
	f := s.st.ifaces[slug]
	if f == nil {
		return plannedValue{}, map[string][]string{"interface": {fmt.Sprintf("Object with slug=%s does not exist.", slug)}}
	}
	// Field-level validation of the hyperlinks comes first, as in DRF.
	p := plannedValue{iface: f}
	var given []string
	for _, k := range []string{"image", "value", "file", "user_upload", "upload_session", "user_uploads", "image_name"} {
		v, ok := m[k]
		if !ok || string(v) == "null" {
			continue
		}
		given = append(given, k)
		switch k {
		case "image":
			pk, msg := hyperlink(v, "/api/v1/cases/images/")
			if msg == "" && s.st.images[pk] == nil {
				msg = "Invalid hyperlink - Object does not exist."
			}
			if msg != "" {
				return plannedValue{}, map[string][]string{k: {msg}}
			}
			p.image = pk
		case "user_upload":
			pk, msg := s.resolveUploadLocked(v)
			if msg != "" {
				return plannedValue{}, map[string][]string{k: {msg}}
			}
			p.uploads = []string{pk}
		case "user_uploads":
			var list []json.RawMessage
			if json.Unmarshal(v, &list) != nil {
				return plannedValue{}, map[string][]string{k: {"Expected a list of items but got type \"" + jsonType(v) + "\"."}}
			}
			if len(list) == 0 {
				return plannedValue{}, map[string][]string{k: {"This list may not be empty."}}
			}
			for _, one := range list {
				pk, msg := s.resolveUploadLocked(one)
				if msg != "" {
					return plannedValue{}, map[string][]string{k: {msg}}
				}
				p.uploads = append(p.uploads, pk)
			}
		case "upload_session":
			// Sessions in this fake are never Queued, so none qualifies.
			return plannedValue{}, map[string][]string{k: {"Invalid hyperlink - Object does not exist."}}
		case "file":
			return plannedValue{}, map[string][]string{k: {"The submitted data was not a file. Check the encoding type on the form."}}
		case "value":
			p.value = v
		case "image_name":
			var name string
			if json.Unmarshal(v, &name) != nil {
				return plannedValue{}, map[string][]string{k: {"Not a valid string."}}
			}
			p.name = trimDRF(name)
			if p.name == "" {
				return plannedValue{}, map[string][]string{k: {"This field may not be blank."}}
			}
		}
	}
	// components/serializers.py ComponentInterfaceValuePostSerializer
	// ._validate_provided_fields: one key, or exactly user_uploads with
	// image_name.
	if len(given) == 0 {
		return nonField("You must provide at least one of " + possibleKeys + ".")
	}
	dicomPair := len(given) == 2 && slices.Contains(given, "user_uploads") && slices.Contains(given, "image_name")
	if len(given) > 1 && !dicomPair {
		return nonField("You can only provide one of " + possibleKeys + " for each socket.")
	}
	p.source = given[0]
	if dicomPair {
		p.source = "dicom"
	}
	switch {
	case f.kind == "DICOM Image Set":
		// _validate_dicom_image: image, or user_uploads with image_name.
		if p.source != "image" && p.source != "dicom" {
			return nonField("either user_uploads with image_name, or image are required for interface kind " + f.kind)
		}
		if p.source == "image" && s.st.images[p.image].imageSetID == "" {
			return nonField("Image must be DICOM")
		}
		return p, nil
	}
	switch f.superKind {
	case "Image":
		// user_uploads with image_name passes here too and takes the DICOM
		// path, whose linked check then refuses the image for this socket.
		if p.source != "image" && p.source != "user_uploads" && p.source != "dicom" {
			return nonField("upload_session, user_uploads or image are required for interface kind " + f.kind)
		}
		if p.source == "image" && s.st.images[p.image].imageSetID != "" {
			return nonField("Image may not be DICOM")
		}
	case "File":
		if p.source != "user_upload" {
			return nonField("user_upload or file is required for interface kind " + f.kind)
		}
	case "Value":
		if p.source != "value" {
			return nonField("value is required for interface kind " + f.kind)
		}
		if msg := checkValueKind(f.kind, p.value); msg != "" {
			return nonField("JSON does not fulfill schema: " + msg)
		}
	}
	return p, nil
}

// resolveUploadLocked resolves an upload hyperlink to one of the caller's
// uploads. Any status will do: the field's queryset is every upload the
// user may change (ComponentInterfaceValuePostSerializer.__init__), so a
// PATCH naming an unfinished upload is accepted and fails later, in the
// background, when the import cannot read it.
func (s *Server) resolveUploadLocked(raw json.RawMessage) (string, string) {
	pk, msg := hyperlink(raw, "/api/v1/uploads/")
	if msg != "" {
		return "", msg
	}
	if s.st.uploads[pk] == nil {
		return "", "Invalid hyperlink - Object does not exist."
	}
	return pk, ""
}

// checkValueKind applies the JSON schema of the simple value kinds; other
// kinds take any JSON but null.
func checkValueKind(kind string, raw json.RawMessage) string {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "instance is not valid JSON"
	}
	want := ""
	okv := true
	switch kind {
	case "Float":
		_, okv = v.(float64)
		want = "number"
	case "Integer":
		n, isNum := v.(float64)
		okv = isNum && n == math.Trunc(n)
		want = "integer"
	case "String":
		_, okv = v.(string)
		want = "string"
	case "Bool":
		_, okv = v.(bool)
		want = "boolean"
	case "Anything":
		return ""
	default:
		okv = v != nil
		want = "object"
	}
	if okv {
		return ""
	}
	return fmt.Sprintf("instance %s is not of type '%s'", strings.TrimSpace(string(raw)), want)
}
