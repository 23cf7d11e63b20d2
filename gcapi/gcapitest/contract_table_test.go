package gcapitest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// serverBehaviours lists what the real Grand Challenge does that a client
// must survive, the server (or panimg) file each follows, and the test that
// shows the fake doing it. Paths are in comic/grand-challenge.org unless
// another repository is named.
var serverBehaviours = []struct {
	name      string
	behaviour string
	source    string
	test      func(*testing.T)
}{
	{"s3 upload ids",
		"S3 upload ids: long, any order of '.', '_', '-', '..' included",
		"app/grandchallenge/uploads/models.py (UserUpload.create_multipart_upload stores S3's UploadId)",
		testS3UploadIDs},
	{"uploads deleted then linked check fails",
		"uploads deleted when a build succeeds; a linked check fails the session afterwards with no user_uploads; failed builds keep theirs",
		"app/grandchallenge/cases/tasks.py (build_images), app/grandchallenge/components/tasks.py (add_image_to_object)",
		testLinkedFailure},
	{"one session per image value",
		"one session per image value of a PATCH; a failed file copy is only a notification",
		"app/grandchallenge/components/models.py (CIVForObjectMixin._update_civ_for_image), app/grandchallenge/components/tasks.py (add_file_to_object)",
		testSessionPerValue},
	{"quota and upload cap",
		"byte quota 403 at presign, 2000-upload cap, uploads count until consumed or cleaned up",
		"app/grandchallenge/uploads/models.py (UserUpload.can_upload_more), uploads/serializers.py (UserUploadCreateSerializer.validate), uploads/tasks.py (delete_old_user_uploads)",
		testQuota},
	{"s3 part errors",
		"part PUTs answered 400 RequestTimeout or ExpiredToken in S3's XML",
		"S3 (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html), presigned by app/grandchallenge/uploads/models.py (UserUpload.generate_presigned_url)",
		testS3PartErrors},
	{"view-only and public archives",
		"view-only users get 400 on item create, 403 on item change; public archives",
		"app/grandchallenge/archives/serializers.py (ArchiveItemPostSerializer: upload_archive), archives/models.py (Archive.assign_permissions)",
		testArchiveAccess},
	{"dicom image set sockets",
		"DICOM Image Set sockets: user_uploads with image_name, their own import path; each upload is one DICOM file (a ZIP fails)",
		"app/grandchallenge/components/serializers.py (_validate_dicom_image, convert_deserialized_civ_data), components/models.py (dicom_upload_with_name), cases/models.py (DICOMImageSetUpload._deidentify_files)",
		testDICOMImageSet},
	{"trimmed titles and filenames",
		"titles and filenames trimmed; filenames at most 128 characters",
		"rest_framework/fields.py (CharField trim_whitespace), app/grandchallenge/uploads/models.py (UserUpload.filename max_length=128)",
		testTrimming},
	{"bad complete and unfinished uploads",
		"complete with a bad part list answers 500; a PATCH naming an unfinished upload is accepted and fails later",
		"app/grandchallenge/uploads/views.py (complete_multipart_upload), components/serializers.py (ComponentInterfaceValuePostSerializer user_uploads queryset), cases/tasks.py (build_images)",
		testCompleteAndUnfinished},
	{"sessions and limit",
		"upload sessions never deleted and not filterable; limit up to 1000",
		"app/grandchallenge/cases/views.py (RawImageUploadSessionViewSet), app/grandchallenge/api/pagination.py (MaxLimit1000OffsetPagination)",
		testSessionsAndLimit},
	{"media on another host",
		"media downloads redirect to a signed URL on another host that refuses a token",
		"app/grandchallenge/serving/views.py (serve_images, protected_storage_redirect)",
		testMediaRedirect},
	{"dicom stack id",
		"DICOM grouped by (study, StackID else series, SOP class); a shared StackID is one 4D image",
		"DIAGNijmegen/rse-panimg panimg/image_builders/dicom.py (get_dicom_headers_by_study)",
		testDICOMStackID},
	{"dicom image set instances",
		"a DICOM image set's instances: de-identified on import, listed once per frame as signed GetDICOMInstance requests sent as given; 404 for other images",
		"app/grandchallenge/cases/views.py (ImageViewSet.dicom_instances), cases/models.py (DICOMImageSet.instance_requests, DICOMImageSetUpload._deidentify_files), components/backends/base.py (serialize_aws_request)",
		testDICOMInstances},
	{"image file urls",
		"image files listed under images/<pk[0:2]>/<pk[2:4]>/<pk>/<file pk>/<name>, image as a pk; served with the token, redirected to storage",
		"app/grandchallenge/cases/models.py (image_file_path), cases/serializers.py (ImageFileSerializer), serving/urls.py, serving/views.py (serve_images)",
		testImageFileURLs},
}

func TestServerBehaviours(t *testing.T) {
	for i, b := range serverBehaviours {
		t.Run(fmt.Sprintf("%02d %s", i+1, b.name), func(t *testing.T) {
			t.Logf("%s (%s)", b.behaviour, b.source)
			b.test(t)
		})
	}
}

// patchValues PATCHes the item with the value entries and returns the answer.
func (f *fixture) patchValues(item string, entries ...map[string]any) resp {
	f.t.Helper()
	vals := make([]any, len(entries))
	for i, e := range entries {
		vals[i] = e
	}
	return f.do("PATCH", "/api/v1/archives/items/"+item+"/", map[string]any{"values": vals})
}

// sessionsSince returns the sessions whose pk is not in before.
func (f *fixture) sessionsSince(before map[string]bool) []UploadSession {
	var out []UploadSession
	for _, se := range f.s.Sessions() {
		if !before[se.PK] {
			out = append(out, se)
		}
	}
	return out
}

func (f *fixture) sessionPKs() map[string]bool {
	m := map[string]bool{}
	for _, se := range f.s.Sessions() {
		m[se.PK] = true
	}
	return m
}

func testS3UploadIDs(t *testing.T) {
	f := newFixture(t, Options{Seed: 7})
	for i := range 20 {
		u := f.createUpload(fmt.Sprintf("f%d.mha", i))
		id := u.S3UploadID
		if len(id) < 96 || !strings.Contains(id, "..") || !strings.Contains(id, "_") || !strings.Contains(id, "-") {
			t.Fatalf("s3_upload_id %q: want at least 96 characters with '..', '_' and '-'", id)
		}
		if strings.Trim(id, s3Alphabet) != "" {
			t.Fatalf("s3_upload_id %q has characters S3 does not use", id)
		}
	}
	// The id is a path segment of the upload actions: a whole upload works.
	u := f.uploadFile("ct.mha", SampleMHA(1, 4, 4, 2))
	if u.Status != "Completed" {
		t.Fatalf("upload = %+v, want Completed", u)
	}
}

func testLinkedFailure(t *testing.T) {
	f := newFixture(t, Options{})
	t.Run("linked check after the build", func(t *testing.T) {
		f.s.SetFaults(Faults{FailLinkedCheck: func([]string) string { return "Segmentation values out of range" }})
		defer f.s.SetFaults(Faults{})
		item := f.createItem("linked")
		u := f.uploadFile("seg.mha", SampleMHA(1, 4, 4, 2))
		before := f.sessionPKs()
		f.want(f.patchValues(item, map[string]any{"interface": "ct-image", "user_uploads": []string{u.APIURL}}), 200, "")
		var se UploadSession
		poll(t, "session Failed", func() bool {
			for _, s := range f.sessionsSince(before) {
				se = s
				return s.Status == "Failed"
			}
			return false
		})
		want := "Image validation for socket ct image failed with error: Segmentation values out of range."
		if se.ErrorMessage != want || len(se.UserUploads) != 0 || len(se.Uploads) != 0 || len(se.ImageSet) != 1 {
			t.Fatalf("session = %+v; want Failed %q, an image, no uploads", se, want)
		}
		f.want(f.do("GET", "/api/v1/uploads/"+u.PK+"/", nil), 404, "")
		if itemImage(f.s, item) != "" {
			t.Fatal("the item got the image the linked check refused")
		}
	})
	t.Run("failed build keeps uploads", func(t *testing.T) {
		f.s.SetFaults(Faults{FailImport: func([]string) string { return "1 file could not be imported" }})
		defer f.s.SetFaults(Faults{})
		item := f.createItem("build")
		u := f.uploadFile("ct.mha", SampleMHA(1, 4, 4, 2))
		before := f.sessionPKs()
		f.want(f.patchValues(item, map[string]any{"interface": "ct-image", "user_uploads": []string{u.APIURL}}), 200, "")
		var se UploadSession
		poll(t, "session Failed", func() bool {
			for _, s := range f.sessionsSince(before) {
				se = s
				return s.Status == "Failed"
			}
			return false
		})
		if len(se.UserUploads) != 1 || se.UserUploads[0] != u.PK {
			t.Fatalf("user_uploads = %v, want [%s]", se.UserUploads, u.PK)
		}
		f.want(f.do("GET", "/api/v1/uploads/"+u.PK+"/", nil), 200, "")
	})
}

func testSessionPerValue(t *testing.T) {
	f := newFixture(t, Options{})
	f.s.AddInterface("overlay", "Segmentation")
	item := f.createItem("two images")
	a := f.uploadFile("ct.mha", SampleMHA(1, 4, 4, 2))
	b := f.uploadFile("seg.mha", SampleMHA(2, 4, 4, 2))
	bad := f.uploadFile("m.json", []byte("{not json"))
	before := f.sessionPKs()
	f.want(f.patchValues(item,
		map[string]any{"interface": "ct-image", "user_uploads": []string{a.APIURL}},
		map[string]any{"interface": "overlay", "user_uploads": []string{b.APIURL}},
		map[string]any{"interface": "measurements", "user_upload": bad.APIURL},
	), 200, "")
	poll(t, "both images on the item", func() bool {
		for _, it := range f.s.Items("demo") {
			if it.PK == item {
				return it.Value("ct-image") != nil && it.Value("overlay") != nil
			}
		}
		return false
	})
	if n := len(f.sessionsSince(before)); n != 2 {
		t.Fatalf("%d sessions, want one per image value", n)
	}
	poll(t, "file copy notification", func() bool {
		for _, n := range f.s.Notifications() {
			if n.Kind == "FILE-COPY" && n.Item == item && n.Interface == "measurements" {
				return true
			}
		}
		return false
	})
	for _, it := range f.s.Items("demo") {
		if it.PK == item && it.Value("measurements") != nil {
			t.Fatal("a failed file copy set the value")
		}
	}
	f.want(f.do("GET", "/api/v1/uploads/"+bad.PK+"/", nil), 200, "")
}

func testQuota(t *testing.T) {
	t.Run("bytes", func(t *testing.T) {
		f := newFixture(t, Options{QuotaBytes: 1000})
		done := f.uploadFile("a.mha", make([]byte, 1000))
		u := f.createUpload("b.mha")
		f.want(f.do("PATCH", f.uploadPath(u, "generate-presigned-urls"), map[string]any{"part_numbers": []int{1}}), 403,
			`{"detail":"Upload limit reached"}`)
		// The quota comes before the body is looked at.
		f.want(f.do("PATCH", f.uploadPath(u, "generate-presigned-urls"), map[string]any{}), 403,
			`{"detail":"Upload limit reached"}`)
		f.s.ExpireUploads()
		f.want(f.do("GET", "/api/v1/uploads/"+done.PK+"/", nil), 404, "")
		u = f.createUpload("b.mha")
		f.presign(u, 1)
	})
	t.Run("count", func(t *testing.T) {
		f := newFixture(t, Options{MaxUploads: 2})
		for i := range 3 {
			f.createUpload(fmt.Sprintf("%d.mha", i))
		}
		f.want(f.do("POST", "/api/v1/uploads/", map[string]string{"filename": "x.mha"}), 400,
			`{"non_field_errors":["You have created too many uploads. Please try again later."]}`)
	})
	t.Run("hourly cleanup", func(t *testing.T) {
		f := newFixture(t, Options{})
		u := f.createUpload("a.mha")
		f.s.Advance(UploadLifetime - time.Minute)
		f.want(f.do("GET", "/api/v1/uploads/"+u.PK+"/", nil), 200, "")
		f.s.Advance(time.Hour + 2*time.Minute) // past the next full hour after 24 h
		f.want(f.do("GET", "/api/v1/uploads/"+u.PK+"/", nil), 404, "")
	})
}

func testS3PartErrors(t *testing.T) {
	f := newFixture(t, Options{})
	u := f.createUpload("ct.mha")
	urls := f.presign(u, 1)
	for _, tc := range []struct {
		faults Faults
		code   string
	}{
		{Faults{RateS3RequestTimeout: 1}, "RequestTimeout"},
		{Faults{RateS3ExpiredToken: 1}, "ExpiredToken"},
	} {
		f.s.SetFaults(tc.faults)
		r := f.do("PUT", urls["1"], []byte("data"), "-")
		if r.status != 400 || !strings.Contains(string(r.body), "<Code>"+tc.code+"</Code>") {
			t.Fatalf("part PUT = %d %s, want 400 with Code %s", r.status, r.body, tc.code)
		}
		// The API is not affected by S3 faults.
		f.want(f.do("GET", "/api/v1/uploads/"+u.PK+"/", nil), 200, "")
	}
	f.s.SetFaults(Faults{})
	f.putPart(urls["1"], []byte("data"))
}

func testArchiveAccess(t *testing.T) {
	f := newFixture(t, Options{})
	view := f.s.AddArchiveAccess("viewed", "Viewed", AccessView)
	pub := f.s.AddArchiveAccess("public", "Public", AccessPublic)
	hidden := f.s.AddArchiveAccess("hidden", "Hidden", AccessNone)
	for _, ar := range []Archive{view, pub} {
		f.want(f.do("POST", "/api/v1/archives/items/", map[string]string{"archive": ar.APIURL}), 400,
			`{"archive":["Invalid hyperlink - Object does not exist."]}`)
	}
	it := f.s.AddItem("viewed", "seen")
	f.want(f.do("GET", "/api/v1/archives/items/"+it.PK+"/", nil), 200, "")
	f.want(f.patchValues(it.PK, map[string]any{"interface": "count", "value": 1}), 403,
		`{"detail":"You do not have permission to perform this action."}`)
	f.want(f.do("GET", "/api/v1/archives/?slug=public", nil, "-"), 200, "")
	var p Page[Archive]
	f.do("GET", "/api/v1/archives/?slug=public", nil, "-").json(t, &p)
	if p.Count != 1 || p.Results[0].PK != pub.PK {
		t.Fatalf("anonymous archive list = %+v, want the public archive", p)
	}
	pubItem := f.s.AddItem("public", "not yours")
	f.want(f.do("GET", "/api/v1/archives/items/"+pubItem.PK+"/", nil), 404, "")
	f.want(f.do("GET", "/api/v1/archives/"+hidden.PK+"/", nil), 404, "")
}

func testDICOMImageSet(t *testing.T) {
	f := newFixture(t, Options{})
	f.s.AddInterface("dicom-set", "DICOM Image Set")
	item := f.createItem("dicom")
	var urls []string
	for name, b := range SampleDICOMSeries(3) {
		urls = append(urls, f.uploadFile(name, b).APIURL)
	}
	f.want(f.patchValues(item, map[string]any{"interface": "dicom-set", "user_uploads": urls}), 400,
		`{"values":[{"non_field_errors":["either user_uploads with image_name, or image are required for interface kind DICOM Image Set"]}]}`)
	before := f.sessionPKs()
	f.want(f.patchValues(item, map[string]any{"interface": "dicom-set", "user_uploads": urls, "image_name": " My series "}), 200, "")
	var im string
	poll(t, "the image set on the item", func() bool {
		for _, it := range f.s.Items("demo") {
			if v := it.Value("dicom-set"); it.PK == item && v != nil && v.Image != nil {
				im = *v.Image
				return true
			}
		}
		return false
	})
	if n := len(f.sessionsSince(before)); n != 0 {
		t.Fatalf("%d upload sessions, want none: DICOM image sets import on their own path", n)
	}
	var got Image
	f.do("GET", strings.TrimPrefix(im, f.s.URL), nil).json(t, &got)
	if got.DICOMImageSet == nil || got.DICOMImageSet.ImageSetID == "" || len(got.Files) != 0 || got.Name != "My series" {
		t.Fatalf("image = %+v, want a DICOM image set named %q without files", got, "My series")
	}
	// Each upload is one DICOM file (DICOMImageSetUpload._deidentify_files):
	// a ZIP of the series is not opened, and the import fails.
	zipped := f.createItem("dicom zipped")
	zu := f.uploadFile("series.zip", SampleZIP(SampleDICOMSeries(3))).APIURL
	f.want(f.patchValues(zipped, map[string]any{"interface": "dicom-set", "user_uploads": []string{zu}, "image_name": "zipped"}), 200, "")
	poll(t, "the import of a ZIP to fail", func() bool {
		for _, n := range f.s.Notifications() {
			if strings.Contains(n.Description, "series.zip") {
				return true
			}
		}
		return false
	})
	for _, it := range f.s.Items("demo") {
		if it.PK == zipped && it.Value("dicom-set") != nil {
			t.Fatalf("a ZIP became the item's DICOM image set: %+v", it.Value("dicom-set"))
		}
	}
}

func testTrimming(t *testing.T) {
	f := newFixture(t, Options{})
	u := f.createUpload("  ct.mha\n")
	var got Upload
	f.do("GET", "/api/v1/uploads/"+u.PK+"/", nil).json(t, &got)
	if got.Filename != "ct.mha" {
		t.Fatalf("filename = %q, want trimmed", got.Filename)
	}
	f.createUpload(" " + strings.Repeat("a", 128) + " ")
	f.want(f.do("POST", "/api/v1/uploads/", map[string]string{"filename": strings.Repeat("a", 129)}), 400,
		`{"filename":["Ensure this field has no more than 128 characters."]}`)
	r := f.do("POST", "/api/v1/archives/items/", map[string]string{"archive": f.arc, "title": "  case 1 "})
	f.want(r, 201, "")
	var it ArchiveItemPost
	r.json(t, &it)
	if it.Title != "case 1" {
		t.Fatalf("title = %q, want trimmed", it.Title)
	}
	f.want(f.do("POST", "/api/v1/archives/items/", map[string]string{"archive": f.arc, "title": "case 1\t"}), 400,
		`{"non_field_errors":["The fields title, archive must make a unique set."]}`)
}

func testCompleteAndUnfinished(t *testing.T) {
	f := newFixture(t, Options{})
	u := f.createUpload("ct.mha")
	urls := f.presign(u, 1)
	etag := f.putPart(urls["1"], []byte("data"))
	for _, parts := range []any{[]partRef{{`"0000"`, 1}}, []partRef{}, []partRef{{etag, 2}}} {
		f.want(f.do("PATCH", f.uploadPath(u, "complete-multipart-upload"), map[string]any{"parts": parts}), 500, "")
	}
	f.want(f.do("GET", f.uploadPath(u, "list-parts"), nil), 200, "") // still Initialized
	item := f.createItem("unfinished")
	before := f.sessionPKs()
	f.want(f.patchValues(item, map[string]any{"interface": "ct-image", "user_uploads": []string{u.APIURL}}), 200, "")
	var se UploadSession
	poll(t, "session Failed", func() bool {
		for _, s := range f.sessionsSince(before) {
			se = s
			return s.Status == "Failed"
		}
		return false
	})
	if se.ErrorMessage != "An unexpected error occurred" || len(se.UserUploads) != 1 {
		t.Fatalf("session = %+v, want Failed with the generic error and the upload", se)
	}
}

func testSessionsAndLimit(t *testing.T) {
	f := newFixture(t, Options{})
	f.s.SetFaults(Faults{FailImport: func([]string) string { return "1 file could not be imported" }})
	for i := range 3 {
		item := f.createItem(fmt.Sprintf("s%d", i))
		u := f.uploadFile("ct.mha", SampleMHA(int64(i), 2, 2, 1))
		f.want(f.patchValues(item, map[string]any{"interface": "ct-image", "user_uploads": []string{u.APIURL}}), 200, "")
	}
	poll(t, "three failed sessions", func() bool {
		n := 0
		for _, se := range f.s.Sessions() {
			if se.Status == "Failed" {
				n++
			}
		}
		return n == 3
	})
	f.s.Advance(2 * UploadLifetime)
	var p Page[UploadSession]
	f.do("GET", "/api/v1/cases/upload-sessions/?status=Succeeded&limit=5000&offset=1", nil).json(t, &p)
	if p.Count != 3 || p.Previous == nil {
		t.Fatalf("sessions = %+v, want all 3 (no filter, none deleted) and a previous link", p)
	}
	prev, err := url.Parse(*p.Previous)
	if err != nil || prev.Query().Get("limit") != "1000" {
		t.Fatalf("previous = %q, want limit cut to 1000", *p.Previous)
	}
}

func testMediaRedirect(t *testing.T) {
	f := newFixture(t, Options{})
	it := f.s.AddItem("demo", "media")
	content := SampleMHA(3, 4, 4, 2)
	if err := f.s.AddImageValue(it.PK, "ct-image", "ct.mha", content); err != nil {
		t.Fatal(err)
	}
	var file string
	for _, im := range f.s.Images() {
		file = im.Files[0].File
	}
	r := f.do("GET", file, nil)
	f.want(r, 302, "")
	loc, err := url.Parse(r.header.Get("Location"))
	api, _ := url.Parse(f.s.URL)
	if err != nil || loc.Hostname() == api.Hostname() {
		t.Fatalf("redirect to %q, want another host than %s", r.header.Get("Location"), api.Hostname())
	}
	f.want(f.do("GET", loc.String(), nil), 400, "") // the token is a second credential
	// Go's client drops the Authorization header on a redirect to another host.
	req, _ := http.NewRequest("GET", file, nil)
	req.Header.Set("Authorization", "Bearer "+f.s.Token())
	hc := f.s.Client()
	defer hc.CloseIdleConnections()
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(got) != string(content) {
		t.Fatalf("followed download = %d, %d bytes; want 200 with the image", res.StatusCode, len(got))
	}
	if n := f.s.Stats().TokenLeaks; n != 1 {
		t.Fatalf("TokenLeaks = %d, want 1 (the deliberate one above)", n)
	}
}

func testDICOMStackID(t *testing.T) {
	f := newFixture(t, Options{})
	run := func(stack string) UploadSession {
		t.Helper()
		item := f.createItem("stack " + stack)
		var urls []string
		for i, series := range []string{"1.2.3.4.1", "1.2.3.4.2"} {
			for name, b := range SampleDICOMSeriesStack(int64(i), 2, "1.2.3", series, stack) {
				urls = append(urls, f.uploadFile(fmt.Sprintf("s%d-%s", i, name), b).APIURL)
			}
		}
		before := f.sessionPKs()
		f.want(f.patchValues(item, map[string]any{"interface": "ct-image", "user_uploads": urls}), 200, "")
		var se UploadSession
		poll(t, "session done", func() bool {
			for _, s := range f.sessionsSince(before) {
				se = s
				return s.Status == "Failed" || (s.Status == "Succeeded" && itemImage(f.s, item) != "")
			}
			return false
		})
		return se
	}
	if se := run("1"); se.Status != "Succeeded" || len(se.ImageSet) != 1 {
		t.Fatalf("shared StackID: session = %+v, want one image", se)
	}
	if se := run(""); se.Status != "Failed" || len(se.ImageSet) != 2 {
		t.Fatalf("two series: session = %+v, want two images and a failed linked check", se)
	}
	var names []string
	for _, im := range f.s.Images() {
		names = append(names, im.Name)
	}
	var b strings.Builder
	json.NewEncoder(&b).Encode(names)
	for _, want := range []string{"1.2.3-0", "1.2.3-1"} {
		if !strings.Contains(b.String(), `"`+want+`"`) {
			t.Fatalf("image names %s, want %s (panimg's <study>-<n>)", b.String(), want)
		}
	}
}
