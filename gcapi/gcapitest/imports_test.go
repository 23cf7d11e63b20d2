package gcapitest

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func gz(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

func TestImportFormats(t *testing.T) {
	hdr, raw := SampleMHDPair(1, 4, 4, 2, "ct.raw")
	dcm := SampleDICOMSeries(3)
	two := SampleDICOMSeriesUIDs(2, 2, "1.2.3", "1.2.3.4")
	mixed := map[string][]byte{}
	for k, v := range dcm {
		mixed[k] = v
	}
	for k, v := range two {
		mixed["b"+k] = v
	}
	type file struct {
		name string
		data []byte
	}
	files := func(m map[string][]byte) []file {
		var out []file
		for _, k := range sortedKeys(m) {
			out = append(out, file{k, m[k]})
		}
		return out
	}
	cases := []struct {
		name    string
		files   []file
		wantErr string // the build fails: uploads kept
		wantTyp string
		linkErr string // the build succeeds, the linked task fails
	}{
		{"mha", []file{{"ct.mha", SampleMHA(1, 4, 4, 2)}}, "", "MHD", ""},
		{"mhd pair", []file{{"ct.mhd", hdr}, {"ct.raw", raw}}, "", "MHD", ""},
		{"mhd without data", []file{{"ct.mhd", hdr}}, "1 file could not be imported", "", ""},
		{"nii", []file{{"ct.nii", SampleNIfTI(1, 4, 4, 2)}}, "", "MHD", ""},
		{"nii.gz", []file{{"ct.nii.gz", gz(SampleNIfTI(1, 4, 4, 2))}}, "", "MHD", ""},
		{"tiff", []file{{"slide.tif", SampleTIFF(1, 8, 8)}}, "", "TIFF", ""},
		{"png", []file{{"x.png", []byte("\x89PNG\r\n\x1a\nrest")}}, "", "MHD", ""},
		{"dicom series", files(dcm), "", "MHD", ""},
		{"zip of dicom", []file{{"series.zip", SampleZIP(dcm)}}, "", "MHD", ""},
		{"zip of mhd pair", []file{{"ct.zip", SampleZIP(map[string][]byte{"d/ct.mhd": hdr, "d/ct.raw": raw, "__MACOSX/._ct.mhd": []byte("junk")})}}, "", "MHD", ""},
		{"two series", files(mixed), "", "", "Image validation for socket ct image failed with error: Image imports should result in a single image."},
		{"two mha", []file{{"a.mha", SampleMHA(1, 2, 2, 1)}, {"b.mha", SampleMHA(2, 2, 2, 1)}}, "", "", "Image validation for socket ct image failed with error: Image imports should result in a single image."},
		{"garbage", []file{{"notes.txt", []byte("hello")}}, "1 file could not be imported", "", ""},
		{"two garbage", []file{{"a.txt", []byte("a")}, {"b.mha", []byte("b")}}, "2 files could not be imported", "", ""},
		{"duplicates", []file{{"a.mha", SampleMHA(1, 2, 2, 1)}, {"a.mha", SampleMHA(1, 2, 2, 1)}}, "Duplicate files uploaded, please try again with a unique set of files", "", ""},
	}
	f := newFixture(t, Options{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			item := f.createItem("case " + tc.name)
			var urls, pks []string
			var all []byte
			for _, fl := range tc.files {
				u := f.uploadFile(fl.name, fl.data)
				urls = append(urls, u.APIURL)
				pks = append(pks, u.PK)
				all = append(all, fl.data...)
			}
			before := map[string]bool{}
			for _, se := range f.s.Sessions() {
				before[se.PK] = true
			}
			f.want(f.do("PATCH", "/api/v1/archives/items/"+item+"/", map[string]any{"values": []any{
				map[string]any{"interface": "ct-image", "user_uploads": urls}}}), 200, "")
			var status, msg string
			var imageSet, left []string
			poll(t, "session to finish", func() bool {
				for _, se := range f.s.Sessions() {
					if before[se.PK] {
						continue
					}
					if se.Status == "Failed" || (se.Status == "Succeeded" && itemImage(f.s, item) != "") {
						status, msg, imageSet, left = se.Status, se.ErrorMessage, se.ImageSet, se.UserUploads
						return true
					}
				}
				return false
			})
			if tc.linkErr != "" {
				// The build succeeded and deleted the uploads; the linked
				// task failed the session afterwards.
				if status != "Failed" || msg != tc.linkErr || len(left) != 0 {
					t.Fatalf("session = %s %q user_uploads %v, want Failed %q with none", status, msg, left, tc.linkErr)
				}
				if itemImage(f.s, item) != "" {
					t.Fatal("failed import changed the item")
				}
				for _, pk := range pks {
					f.want(f.do("GET", "/api/v1/uploads/"+pk+"/", nil), 404, "")
				}
				return
			}
			if tc.wantErr != "" {
				if status != "Failed" || msg != tc.wantErr || !slices.Equal(left, pks) {
					t.Fatalf("session = %s %q user_uploads %v, want Failed %q with %v", status, msg, left, tc.wantErr, pks)
				}
				if itemImage(f.s, item) != "" {
					t.Fatal("failed import changed the item")
				}
				for _, pk := range pks {
					f.want(f.do("GET", "/api/v1/uploads/"+pk+"/", nil), 200, "")
				}
				return
			}
			if len(imageSet) != 1 {
				t.Fatalf("image_set = %v, want one image", imageSet)
			}
			im := itemImage(f.s, item)
			for _, got := range f.s.Images() {
				if got.PK == im && (len(got.Files) != 1 || got.Files[0].ImageType != tc.wantTyp) {
					t.Fatalf("image files = %+v, want one %s", got.Files, tc.wantTyp)
				}
			}
			content, err := f.s.ImageContent(im)
			if err != nil || !bytes.Equal(content, all) {
				t.Fatalf("ImageContent = %d bytes, %v; want the %d uploaded bytes", len(content), err, len(all))
			}
			for _, pk := range pks {
				f.want(f.do("GET", "/api/v1/uploads/"+pk+"/", nil), 404, "")
			}
		})
	}
}

func itemImage(s *Server, pk string) string {
	for _, it := range s.Items("demo") {
		if it.PK == pk {
			if v := it.Value("ct-image"); v != nil && v.Image != nil {
				u := strings.TrimSuffix(*v.Image, "/")
				return u[strings.LastIndex(u, "/")+1:]
			}
		}
	}
	return ""
}

func TestImportDelayAndDownload(t *testing.T) {
	f := newFixture(t, Options{ImportDelay: time.Hour})
	item := f.createItem("slow")
	data := SampleMHA(5, 8, 8, 4)
	u := f.uploadFile("ct.mha", data)
	f.want(f.do("PATCH", "/api/v1/archives/items/"+item+"/", map[string]any{"values": []any{
		map[string]any{"interface": "ct-image", "user_uploads": []string{u.APIURL}}}}), 200, "")
	ss := f.s.Sessions()
	if len(ss) != 1 || ss[0].Status != "Re-Queued" || !slices.Equal(ss[0].UserUploads, []string{u.PK}) || ss[0].Uploads[0] != u.APIURL {
		t.Fatalf("sessions = %+v, want one Re-Queued holding the upload", ss)
	}
	f.s.Advance(time.Hour)
	poll(t, "import", func() bool { return itemImage(f.s, item) != "" })
	se := f.s.Sessions()[0]
	if se.Status != "Succeeded" || len(se.UserUploads) != 0 {
		t.Fatalf("session = %+v, want Succeeded with no uploads left", se)
	}
	im := itemImage(f.s, item)
	r := f.do("GET", "/api/v1/cases/images/"+im+"/", nil)
	var img struct {
		Name  string
		Width *int
		Files []struct{ File, ImageType string }
	}
	r.json(t, &img)
	if img.Name != "ct.mha" || img.Width == nil || *img.Width != 8 || !strings.HasSuffix(img.Files[0].File, im+".mha") {
		t.Fatalf("image = %+v", img)
	}
	t.Run("download redirects without token", func(t *testing.T) {
		f.want(f.do("GET", img.Files[0].File, nil, "-"), 403, "")
		red := f.do("GET", img.Files[0].File, nil)
		f.want(red, 302, "")
		loc := red.header.Get("Location")
		f.want(f.do("GET", loc, nil), 400, "") // a token sent to the signed URL is refused
		got := f.do("GET", loc, nil, "-")
		f.want(got, 200, "")
		if !bytes.Equal(got.body, data) {
			t.Fatalf("downloaded %d bytes, want the %d uploaded", len(got.body), len(data))
		}
		if n := f.s.Stats().TokenLeaks; n != 1 {
			t.Fatalf("TokenLeaks = %d, want 1 (the deliberate one)", n)
		}
		f.s.Advance(MediaURLExpiry + time.Second)
		f.want(f.do("GET", loc, nil, "-"), 403, "")
	})
	t.Run("origin filter", func(t *testing.T) {
		r := f.do("GET", "/api/v1/cases/images/?origin="+se.PK, nil)
		var p struct{ Count int }
		r.json(t, &p)
		if p.Count != 1 {
			t.Fatalf("images of session = %d, want 1", p.Count)
		}
	})
	t.Run("reuse of consumed upload", func(t *testing.T) {
		f.want(f.do("PATCH", "/api/v1/archives/items/"+item+"/", map[string]any{"values": []any{
			map[string]any{"interface": "ct-image", "user_uploads": []string{u.APIURL}}}}), 400, "")
	})
	t.Run("existing image", func(t *testing.T) {
		other := f.createItem("other")
		r := f.do("PATCH", "/api/v1/archives/items/"+other+"/", map[string]any{"values": []any{
			map[string]any{"interface": "ct-image", "image": f.s.URL + "/api/v1/cases/images/" + im + "/"}}})
		f.want(r, 200, "")
		if itemImage(f.s, other) != im {
			t.Fatal("image value not set synchronously")
		}
	})
}

func TestFailImportHook(t *testing.T) {
	f := newFixture(t, Options{})
	f.s.SetFaults(Faults{FailImport: func(names []string) string {
		if slices.Contains(names, "bad.mha") {
			return "Time limit exceeded"
		}
		return ""
	}})
	item := f.createItem("x")
	u := f.uploadFile("bad.mha", SampleMHA(1, 2, 2, 2))
	f.want(f.do("PATCH", "/api/v1/archives/items/"+item+"/", map[string]any{"values": []any{
		map[string]any{"interface": "ct-image", "user_uploads": []string{u.APIURL}}}}), 200, "")
	poll(t, "failure", func() bool {
		ss := f.s.Sessions()
		return len(ss) == 1 && ss[0].Status == "Failed" && ss[0].ErrorMessage == "Time limit exceeded"
	})
}

func TestFileValue(t *testing.T) {
	f := newFixture(t, Options{})
	item := f.createItem("report")
	pdf := []byte("%PDF-1.4 fake")
	u := f.uploadFile("report.pdf", pdf)
	f.want(f.do("PATCH", "/api/v1/archives/items/"+item+"/", map[string]any{"values": []any{
		map[string]any{"interface": "report", "user_upload": u.APIURL}}}), 200, "")
	var fileURL string
	poll(t, "file copy", func() bool {
		for _, it := range f.s.Items("demo") {
			if v := it.Value("report"); it.PK == item && v != nil && v.File != nil {
				fileURL = *v.File
				return true
			}
		}
		return false
	})
	f.want(f.do("GET", "/api/v1/uploads/"+u.PK+"/", nil), 404, "")
	red := f.do("GET", fileURL, nil)
	f.want(red, 302, "")
	got := f.do("GET", red.header.Get("Location"), nil, "-")
	if !bytes.Equal(got.body, pdf) {
		t.Fatalf("file = %q, want %q", got.body, pdf)
	}
	t.Run("json file socket rejects bad json", func(t *testing.T) {
		bad := f.uploadFile("m.json", []byte("{nope"))
		good := f.uploadFile("m2.json", []byte(`{"a":1}`))
		f.want(f.do("PATCH", "/api/v1/archives/items/"+item+"/", map[string]any{"values": []any{
			map[string]any{"interface": "measurements", "user_upload": bad.APIURL}}}), 200, "")
		f.want(f.do("PATCH", "/api/v1/archives/items/"+item+"/", map[string]any{"values": []any{
			map[string]any{"interface": "measurements", "user_upload": good.APIURL}}}), 200, "")
		poll(t, "good copy", func() bool {
			_, err := f.s.UploadContent(good.PK)
			return err != nil
		})
		if _, err := f.s.UploadContent(bad.PK); err != nil {
			t.Fatalf("the refused upload is gone: %v", err)
		}
	})
}

func TestFaultsDeterministic(t *testing.T) {
	run := func() []int {
		f := newFixture(t, Options{Seed: 42})
		f.s.SetFaults(Faults{Rate5xx: 0.2, Rate429: 0.2, Rate500: 0.1, PathPrefix: "/api/v1/archives/"})
		var got []int
		for range 40 {
			got = append(got, f.do("GET", "/api/v1/archives/?slug=demo", nil).status)
		}
		return got
	}
	a, b := run(), run()
	if !slices.Equal(a, b) {
		t.Fatalf("same seed gave different faults:\n%v\n%v", a, b)
	}
	counts := map[int]int{}
	for _, s := range a {
		counts[s]++
	}
	if counts[200] == 0 || counts[429] == 0 || counts[500] == 0 || counts[502]+counts[503]+counts[504] == 0 {
		t.Fatalf("statuses %v: want a mix of 200, 429, 500 and 5xx", counts)
	}
}

func TestFaultKinds(t *testing.T) {
	t.Run("500 acts", func(t *testing.T) {
		f := newFixture(t, Options{})
		f.s.SetFaults(Faults{Rate500: 1, PathPrefix: "/api/v1/archives/items/"})
		f.want(f.do("POST", "/api/v1/archives/items/", map[string]string{"archive": f.arc, "title": "t"}), 500, "")
		if n := len(f.s.Items("demo")); n != 1 {
			t.Fatalf("items = %d, want the item created despite the 500", n)
		}
		if st := f.s.Stats(); st.ItemCreates != 1 || st.Creates != 1 || st.Faults != 1 {
			t.Fatalf("stats = %+v", st)
		}
	})
	t.Run("429 before acting", func(t *testing.T) {
		f := newFixture(t, Options{})
		f.s.SetFaults(Faults{Rate429: 1, RetryAfter: 3 * time.Second})
		r := f.do("POST", "/api/v1/uploads/", map[string]string{"filename": "a.mha"})
		f.want(r, 429, "")
		if r.header.Get("Retry-After") != "3" || len(f.s.Uploads()) != 0 {
			t.Fatalf("Retry-After = %q, uploads = %d", r.header.Get("Retry-After"), len(f.s.Uploads()))
		}
	})
	t.Run("reset", func(t *testing.T) {
		f := newFixture(t, Options{})
		f.s.SetFaults(Faults{RateReset: 1, PathPrefix: "/api/v1/uploads/"})
		req, _ := http.NewRequest("POST", f.s.URL+"/api/v1/uploads/", strings.NewReader(`{"filename":"a.mha"}`))
		req.Header.Set("Authorization", "Bearer "+f.s.Token())
		res, err := f.hc.Do(req)
		if err == nil {
			_, err = io.ReadAll(res.Body)
			res.Body.Close()
		}
		if err == nil {
			t.Fatal("request survived a reset")
		}
		if n := len(f.s.Uploads()); n != 1 {
			t.Fatalf("uploads = %d, want 1 (acted before the reset)", n)
		}
		// The request is recorded after the connection closed.
		poll(t, "the reset request recorded", func() bool {
			rq := f.s.Requests()
			return len(rq) > 0 && rq[len(rq)-1].Fault == "reset"
		})
	})
	t.Run("stall ends on close", func(t *testing.T) {
		s := NewServer(Options{})
		s.SetFaults(Faults{RateStall: 1, Stall: time.Hour})
		hc := s.Client()
		done := make(chan error, 1)
		go func() {
			res, err := hc.Get(s.URL + "/api/v1/archives/")
			if err == nil {
				res.Body.Close()
			}
			done <- err
		}()
		poll(t, "request to stall", func() bool { return s.stalling.Load() == 1 })
		s.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("stalled request outlived Close")
		}
		hc.CloseIdleConnections()
	})
}

func TestDICOMKey(t *testing.T) {
	for name, b := range SampleDICOMSeries(2) {
		k, ok := dicomKey(b)
		if !ok || k.key != [3]string{SampleStudyUID, SampleSeriesUID, SampleSOPClass} {
			t.Fatalf("%s: key = %v, %v", name, k, ok)
		}
	}
	if _, ok := dicomKey(bytes.Repeat([]byte{0}, 200)); ok {
		t.Fatal("zeros parsed as DICOM")
	}
}
