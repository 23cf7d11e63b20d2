package gcapitest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// instancesAnswer is the JSON of GET /cases/images/{pk}/dicom/instances/,
// decoded the way the official client reads it (rse-gcapi gcapi/client.py
// ImagesAPI._download_dicom_image_set: instances[].sop_instance_uid and
// instances[].get_instance passed to httpx.stream as keyword arguments).
type instancesAnswer struct {
	ImageSetID string `json:"image_set_id"`
	Instances  []struct {
		SOPInstanceUID string `json:"sop_instance_uid"`
		GetInstance    struct {
			URL     string            `json:"url"`
			Method  string            `json:"method"`
			Data    json.RawMessage   `json:"data"`
			Headers map[string]string `json:"headers"`
		} `json:"get_instance"`
	} `json:"instances"`
}

// sendAsGiven sends a signed request with exactly its headers: no token.
func (f *fixture) sendAsGiven(method, u string, headers map[string]string) resp {
	f.t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := f.hc.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, u, err)
	}
	defer res.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(res.Body); err != nil {
		f.t.Fatal(err)
	}
	return resp{res.StatusCode, res.Header, b.Bytes()}
}

// importDICOMSet uploads files and PATCHes them to a new item as a DICOM
// Image Set value, the way gcapi's DICOMImageSetFileCreateStrategy does,
// and returns the image's pk once the import made it the item's value.
func (f *fixture) importDICOMSet(files map[string][]byte) string {
	f.t.Helper()
	f.s.AddInterface("dicom-set", "DICOM Image Set")
	item := f.createItem("dicom")
	var urls []string
	for _, name := range sortedKeys(files) {
		urls = append(urls, f.uploadFile(name, files[name]).APIURL)
	}
	f.want(f.patchValues(item, map[string]any{"interface": "dicom-set", "user_uploads": urls, "image_name": "My series"}), 200, "")
	var im string
	poll(f.t, "the image set on the item", func() bool {
		for _, it := range f.s.Items("demo") {
			if v := it.Value("dicom-set"); it.PK == item && v != nil && v.Image != nil {
				im = *v.Image
				return true
			}
		}
		return false
	})
	u, err := url.Parse(im)
	if err != nil {
		f.t.Fatal(err)
	}
	return filepath.Base(strings.TrimSuffix(u.Path, "/"))
}

// dicomString reads a string element of an explicit VR little-endian file.
func dicomString(t *testing.T, b []byte, tag uint32) string {
	t.Helper()
	d := &dcmReader{b: b, pos: 132, explicit: true}
	for !d.done() {
		tg, v, ok := d.next()
		if !ok {
			t.Fatalf("bad DICOM file")
		}
		if tg == tag {
			return strings.TrimRight(string(v), "\x00 ")
		}
	}
	return ""
}

func testDICOMInstances(t *testing.T) {
	f := newFixture(t, Options{})
	files := SampleDICOMSeries(3)
	files["IM000009.dcm"] = SampleDICOMFrames(9, 3, 9, SampleStudyUID, SampleSeriesUID)
	pk := f.importDICOMSet(files)

	// The official client's flow: the image detail, then the instances.
	var img Image
	f.do("GET", "/api/v1/cases/images/"+pk+"/", nil).json(t, &img)
	if img.DICOMImageSet == nil {
		t.Fatalf("image %s has no dicom_image_set", pk)
	}
	if img.StudyInstanceUID != "" || img.SeriesInstanceUID != "" {
		t.Errorf("image study %q, series %q; the server leaves both blank for an image set", img.StudyInstanceUID, img.SeriesInstanceUID)
	}
	r := f.do("GET", "/api/v1/cases/images/"+pk+"/dicom/instances/", nil)
	f.want(r, 200, "")
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q: gcapi parses only application/json", ct)
	}
	var ans instancesAnswer
	r.json(t, &ans)
	if ans.ImageSetID != img.DICOMImageSet.ImageSetID {
		t.Errorf("image_set_id %q, want the image's %q", ans.ImageSetID, img.DICOMImageSet.ImageSetID)
	}
	// One entry per frame: three single-frame instances and one of three.
	if len(ans.Instances) != 6 {
		t.Fatalf("%d instance entries, want 6 (one per frame)", len(ans.Instances))
	}
	stored, err := f.s.DICOMInstances(pk)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 4 {
		t.Fatalf("%d stored instances, want 4", len(stored))
	}
	bySOP := map[string][]byte{}
	for _, in := range stored {
		bySOP[in.SOPInstanceUID] = in.Content
	}
	for _, in := range ans.Instances {
		g := in.GetInstance
		if g.Method != "GET" || string(g.Data) != "null" || !strings.HasPrefix(g.URL, f.s.StorageURL+"/healthimaging/") {
			t.Fatalf("get_instance = %+v", g)
		}
		if strings.Contains(g.Headers["Authorization"], f.s.Token()) {
			t.Fatal("the signed request carries the API token")
		}
		got := f.sendAsGiven(g.Method, g.URL, g.Headers)
		f.want(got, 200, "")
		if ct := got.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/dicom; transfer-syntax=") {
			t.Errorf("Content-Type %q", ct)
		}
		if !bytes.Equal(got.body, bySOP[in.SOPInstanceUID]) {
			t.Errorf("instance %s: the bytes served differ from those stored", in.SOPInstanceUID)
		}
	}

	// What the server stored is de-identified: new UIDs under its root,
	// the pixel data untouched.
	for _, in := range stored {
		for _, tag := range []uint32{0x00080018, 0x0020000D, 0x0020000E, 0x00020003} {
			if v := dicomString(t, in.Content, tag); !strings.HasPrefix(v, gcRootUID) || len(v) > 64 {
				t.Errorf("instance %s: tag %08x = %q, want a UID under %s", in.SOPInstanceUID, tag, v, gcRootUID)
			}
		}
		if v := dicomString(t, in.Content, 0x00120062); v != "YES" {
			t.Errorf("PatientIdentityRemoved = %q", v)
		}
	}
	orig := files["IM000001.dcm"]
	px := orig[bytes.LastIndex(orig, []byte{0xE0, 0x7F, 0x10, 0x00}):]
	found := false
	for _, in := range stored {
		found = found || bytes.HasSuffix(in.Content, px)
	}
	if !found {
		t.Error("no stored instance ends with IM000001.dcm's pixel data")
	}

	if _, err := exec.LookPath("dcmdump"); err == nil {
		p := filepath.Join(t.TempDir(), "i.dcm")
		if err := os.WriteFile(p, stored[0].Content, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("dcmdump", "-q", p).CombinedOutput(); err != nil || len(out) == 0 {
			t.Errorf("dcmdump cannot read a stored instance: %v\n%s", err, out)
		}
	}

	g := ans.Instances[0].GetInstance
	t.Run("signed headers must be sent as given", func(t *testing.T) {
		h := map[string]string{}
		for k, v := range g.Headers {
			h[k] = v
		}
		h["Accept"] = "application/dicom"
		f.want(f.sendAsGiven("GET", g.URL, h), 403, "")
		f.want(f.sendAsGiven("GET", g.URL, map[string]string{"Authorization": "Bearer " + f.s.Token()}), 403, "")
	})
	t.Run("signatures expire", func(t *testing.T) {
		f.s.Advance(SignedRequestExpiry + time.Minute)
		f.want(f.sendAsGiven("GET", g.URL, g.Headers), 403, "")
	})
	t.Run("other images and strangers get 404", func(t *testing.T) {
		f.want(f.do("GET", "/api/v1/cases/images/"+pk+"/dicom/instances/", nil, "-"), 404, "")
		f.want(f.do("GET", "/api/v1/cases/images/00000000-0000-4000-8000-000000000000/dicom/instances/", nil), 404, "")
		item := f.s.AddItem("demo", "mha")
		if err := f.s.AddImageValue(item.PK, "ct-image", "ct.mha", SampleMHA(1, 2, 2, 2)); err != nil {
			t.Fatal(err)
		}
		var mha string
		for _, it := range f.s.Items("demo") {
			if v := it.Value("ct-image"); it.PK == item.PK && v != nil {
				mha = *v.Image
			}
		}
		f.want(f.do("GET", strings.TrimPrefix(mha, f.s.URL)+"dicom/instances/", nil), 404,
			`{"detail":"This image does not have a DICOM Image Set."}`)
	})
}

func testImageFileURLs(t *testing.T) {
	f := newFixture(t, Options{})
	item := f.s.AddItem("demo", "mha")
	content := SampleMHA(1, 3, 3, 3)
	if err := f.s.AddImageValue(item.PK, "ct-image", "ct.mha", content); err != nil {
		t.Fatal(err)
	}
	var img Image
	f.do("GET", strings.TrimPrefix(*f.s.Items("demo")[0].Value("ct-image").Image, f.s.URL), nil).json(t, &img)
	if len(img.Files) != 1 {
		t.Fatalf("files = %+v", img.Files)
	}
	file := img.Files[0]
	if file.Image != img.PK {
		t.Errorf("files[0].image = %q, want the image pk %q", file.Image, img.PK)
	}
	wantPath := "/media/images/" + img.PK[0:2] + "/" + img.PK[2:4] + "/" + img.PK + "/" + file.PK + "/" + img.PK + ".mha"
	if file.File != f.s.URL+wantPath {
		t.Errorf("files[0].file = %q, want %q", file.File, f.s.URL+wantPath)
	}
	// images.download(files=...): GET with the token, follow the redirect
	// (rse-gcapi gcapi/client.py ImagesAPI.download).
	get := func(path string, auth ...string) resp {
		t.Helper()
		r := f.do("GET", path, nil, auth...)
		if r.status != http.StatusFound {
			return r
		}
		return f.do("GET", r.header.Get("Location"), nil, "-")
	}
	if r := get(wantPath); r.status != 200 || !bytes.Equal(r.body, content) {
		t.Fatalf("download: status %d, %d bytes, want the %d stored", r.status, len(r.body), len(content))
	}
	for _, p := range []string{
		"/media/images/" + img.PK + "/" + file.PK + "/" + img.PK + ".mha", // the other route; not where the file is
		"/media/images/" + img.PK[0:2] + "/" + img.PK[2:4] + "/" + img.PK + "/" + file.PK + "/other.mha",
		"/media/images/zz/" + img.PK[2:4] + "/" + img.PK + "/" + file.PK + "/" + img.PK + ".mha",
	} {
		if r := get(p); r.status != 404 {
			t.Errorf("GET %s: %d, want 404", p, r.status)
		}
	}
	if r := get(wantPath, "-"); r.status != 403 {
		t.Errorf("GET without a token: %d, want 403", r.status)
	}
	// The same file by a path with a dot segment normalised away.
	if r := get("/media/images/" + img.PK[0:2] + "/" + img.PK[2:4] + "/" + img.PK + "/x/../" + file.PK + "/" + img.PK + ".mha"); r.status != 200 {
		t.Errorf("normalised path: %d, want 200", r.status)
	}
}
