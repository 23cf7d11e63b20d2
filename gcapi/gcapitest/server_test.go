package gcapitest

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestAuth(t *testing.T) {
	f := newFixture(t, Options{})
	t.Run("wrong token", func(t *testing.T) {
		f.want(f.do("GET", "/api/v1/archives/", nil, "Bearer nope"), 401, `{"detail":"Invalid token."}`)
	})
	t.Run("keyword case-insensitive", func(t *testing.T) {
		r := f.do("GET", "/api/v1/archives/?slug=demo", nil, "BEARER "+f.s.Token())
		f.want(r, 200, "")
		var p struct{ Count int }
		r.json(t, &p)
		if p.Count != 1 {
			t.Fatalf("count = %d, want 1", p.Count)
		}
	})
	for name, auth := range map[string]string{"missing": "-", "other scheme": "Token " + f.s.Token()} {
		t.Run(name+" header is anonymous", func(t *testing.T) {
			f.want(f.do("GET", "/api/v1/archives/", nil, auth), 200, `{"count":0,"next":null,"previous":null,"results":[]}`)
			f.want(f.do("GET", "/api/v1/uploads/", nil, auth), 200, `{"count":0,"next":null,"previous":null,"results":[]}`)
			f.want(f.do("POST", "/api/v1/uploads/", map[string]string{"filename": "a.mha"}, auth), 401,
				`{"detail":"Authentication credentials were not provided."}`)
			f.want(f.do("GET", "/api/v1/archives/"+f.apk+"/", nil, auth), 404, `{"detail":"Not found."}`)
		})
	}
	t.Run("missing slash redirects", func(t *testing.T) {
		r := f.do("GET", "/api/v1/archives?slug=demo", nil)
		f.want(r, 301, "")
		if got, want := r.header.Get("Location"), "/api/v1/archives/?slug=demo"; got != want {
			t.Fatalf("Location = %q, want %q", got, want)
		}
	})
}

func TestUploadErrors(t *testing.T) {
	f := newFixture(t, Options{})
	t.Run("filename", func(t *testing.T) {
		f.want(f.do("POST", "/api/v1/uploads/", map[string]string{"filename": "../../foo.bat"}), 400,
			`{"filename":["../../foo.bat is not a valid filename"]}`)
		f.want(f.do("POST", "/api/v1/uploads/", map[string]string{"filename": strings.Repeat("a", 129)}), 400,
			`{"filename":["Ensure this field has no more than 128 characters."]}`)
	})
	u := f.createUpload("ct.mha")
	if u.Status != "Initialized" || u.S3UploadID == "" {
		t.Fatalf("new upload = %+v, want Initialized with an s3_upload_id", u)
	}
	t.Run("s3_upload_id mismatch", func(t *testing.T) {
		bad := u
		bad.S3UploadID = "other"
		for _, a := range []string{"generate-presigned-urls", "complete-multipart-upload", "abort-multipart-upload"} {
			f.want(f.do("PATCH", f.uploadPath(bad, a), map[string]any{}), 404, `{"detail":"Not found."}`)
		}
		f.want(f.do("GET", f.uploadPath(bad, "list-parts"), nil), 404, "")
	})
	t.Run("part numbers", func(t *testing.T) {
		f.want(f.do("PATCH", f.uploadPath(u, "generate-presigned-urls"), map[string]any{}), 400,
			"{\"non_field_errors\":[\"The `part_numbers` field is required\"]}")
		for _, n := range []int{0, 10001} {
			f.want(f.do("PATCH", f.uploadPath(u, "generate-presigned-urls"), map[string]any{"part_numbers": []int{n}}), 400, "")
		}
	})
	t.Run("no delete", func(t *testing.T) {
		f.want(f.do("DELETE", "/api/v1/uploads/"+u.PK+"/", nil), 405, "")
	})
	t.Run("complete checks parts", func(t *testing.T) {
		urls := f.presign(u, 1, 2)
		small := bytes.Repeat([]byte("x"), 1000)
		e1 := f.putPart(urls["1"], small)
		e2 := f.putPart(urls["2"], small)
		if want := `"` + md5hex(small) + `"`; e1 != want {
			t.Fatalf("ETag = %s, want %s", e1, want)
		}
		// S3 refusing the list (InvalidPart, EntityTooSmall) is an
		// unhandled ClientError on the server: 500, upload still open.
		f.want(f.do("PATCH", f.uploadPath(u, "complete-multipart-upload"),
			map[string]any{"parts": []partRef{{`"deadbeef"`, 1}}}), 500, "")
		f.want(f.do("PATCH", f.uploadPath(u, "complete-multipart-upload"),
			map[string]any{"parts": []partRef{{e1, 1}, {e2, 2}}}), 500, "")
		f.want(f.do("PATCH", f.uploadPath(u, "complete-multipart-upload"), map[string]any{}), 400,
			"{\"non_field_errors\":[\"The `parts` field is required\"]}")
		var lp uploadResp
		rl := f.do("GET", f.uploadPath(u, "list-parts"), nil)
		f.want(rl, 200, "")
		rl.json(t, &lp)
		if len(lp.Parts) != 2 || lp.Parts[0].ETag != e1 || lp.Parts[1].Size != 1000 {
			t.Fatalf("list-parts = %+v", lp.Parts)
		}
		// A big first part makes the same list valid.
		big := bytes.Repeat([]byte("y"), MinPartSize)
		e1 = f.putPart(urls["1"], big)
		f.want(f.do("PATCH", f.uploadPath(u, "complete-multipart-upload"),
			map[string]any{"parts": []partRef{{e1, 1}, {e2, 2}}}), 200, "")
		got, err := f.s.UploadContent(u.PK)
		if err != nil || len(got) != MinPartSize+1000 {
			t.Fatalf("content = %d bytes, %v; want %d", len(got), err, MinPartSize+1000)
		}
	})
	t.Run("not Initialized", func(t *testing.T) {
		f.want(f.do("PATCH", f.uploadPath(u, "complete-multipart-upload"), map[string]any{"parts": []partRef{}}), 500, "")
		f.want(f.do("PATCH", f.uploadPath(u, "abort-multipart-upload"), nil), 500, "")
		f.want(f.do("GET", f.uploadPath(u, "list-parts"), nil), 500, "")
		f.want(f.do("PATCH", f.uploadPath(u, "generate-presigned-urls"), map[string]any{"part_numbers": []int{3}}), 403,
			`{"detail":"Upload limit reached"}`)
	})
	t.Run("abort", func(t *testing.T) {
		a := f.createUpload("b.mha")
		r := f.do("PATCH", f.uploadPath(a, "abort-multipart-upload"), nil)
		f.want(r, 200, "")
		var got uploadResp
		r.json(t, &got)
		if got.Status != "Aborted" || got.S3UploadID != "" {
			t.Fatalf("aborted = %+v", got)
		}
	})
}

func md5hex(b []byte) string {
	h := md5.Sum(b)
	return hex.EncodeToString(h[:])
}

func TestUploadLimits(t *testing.T) {
	t.Run("quota", func(t *testing.T) {
		f := newFixture(t, Options{QuotaBytes: 100})
		f.uploadFile("a.txt", bytes.Repeat([]byte("a"), 60))
		u := f.createUpload("b.txt")
		urls := f.presign(u, 1) // 60 < 100: allowed
		f.putPart(urls["1"], bytes.Repeat([]byte("b"), 40))
		f.want(f.do("PATCH", f.uploadPath(u, "generate-presigned-urls"), map[string]any{"part_numbers": []int{2}}), 403,
			`{"detail":"Upload limit reached"}`)
	})
	t.Run("max uploads", func(t *testing.T) {
		f := newFixture(t, Options{MaxUploads: 2})
		for range 3 {
			f.createUpload("a.mha")
		}
		f.want(f.do("POST", "/api/v1/uploads/", map[string]string{"filename": "a.mha"}), 400,
			`{"non_field_errors":["You have created too many uploads. Please try again later."]}`)
	})
	t.Run("presigned expiry and signature", func(t *testing.T) {
		f := newFixture(t, Options{PresignExpiry: time.Minute})
		u := f.createUpload("a.mha")
		url := f.presign(u, 1)["1"]
		f.want(f.do("PUT", strings.Replace(url, "partNumber=1", "partNumber=2", 1), []byte("x"), "-"), 403, "")
		f.s.Advance(2 * time.Minute)
		r := f.do("PUT", url, []byte("x"), "-")
		f.want(r, 403, "")
		if !strings.Contains(string(r.body), "expired") {
			t.Fatalf("body = %s, want an expiry error", r.body)
		}
	})
	t.Run("uploads expire after a day", func(t *testing.T) {
		f := newFixture(t, Options{})
		u := f.createUpload("a.mha")
		f.s.Advance(23 * time.Hour)
		f.want(f.do("GET", "/api/v1/uploads/"+u.PK+"/", nil), 200, "")
		f.s.Advance(2 * time.Hour)
		f.want(f.do("GET", "/api/v1/uploads/"+u.PK+"/", nil), 404, "")
		if n := len(f.s.Uploads()); n != 0 {
			t.Fatalf("Uploads() has %d, want 0", n)
		}
	})
}

func TestItems(t *testing.T) {
	f := newFixture(t, Options{})
	t.Run("create errors", func(t *testing.T) {
		f.want(f.do("POST", "/api/v1/archives/items/", map[string]string{"archive": f.s.URL + "/api/v1/archives/nope/"}), 400,
			`{"archive":["Invalid hyperlink - Object does not exist."]}`)
		f.want(f.do("POST", "/api/v1/archives/items/", map[string]any{"archive": f.arc, "values": []any{map[string]any{"interface": "count", "value": 1}}}), 400,
			`["Values can only be added via update"]`)
		f.createItem("case 1")
		f.want(f.do("POST", "/api/v1/archives/items/", map[string]string{"archive": f.arc, "title": "case 1"}), 400,
			`{"non_field_errors":["The fields title, archive must make a unique set."]}`)
		// Empty titles are not unique.
		f.createItem("")
		f.createItem("")
	})
	pk := f.createItem("values")
	path := "/api/v1/archives/items/" + pk + "/"
	t.Run("value", func(t *testing.T) {
		r := f.do("PATCH", path, map[string]any{"values": []any{map[string]any{"interface": "lung-volume", "value": 1.5}}})
		f.want(r, 200, "")
		var it struct {
			Values []struct {
				Interface any
				Value     any
				PK        int
			}
		}
		r.json(t, &it)
		if len(it.Values) != 1 || it.Values[0].Interface != "lung-volume" || it.Values[0].Value != 1.5 {
			t.Fatalf("PATCH values = %+v, want slug form with 1.5", it.Values)
		}
		first := it.Values[0].PK
		r = f.do("PATCH", path, map[string]any{"values": []any{map[string]any{"interface": "lung-volume", "value": 1.50}}})
		r.json(t, &it)
		if it.Values[0].PK != first {
			t.Fatalf("identical value made a new value pk %d, want %d", it.Values[0].PK, first)
		}
		g := f.do("GET", path, nil)
		var full struct {
			Values []struct {
				Interface struct{ Slug, SuperKind string }
			}
		}
		g.json(t, &full)
		if full.Values[0].Interface.Slug != "lung-volume" {
			t.Fatalf("GET values = %+v, want full interface object", full.Values)
		}
	})
	t.Run("atomic on error", func(t *testing.T) {
		r := f.do("PATCH", path, map[string]any{"values": []any{
			map[string]any{"interface": "count", "value": 3},
			map[string]any{"interface": "lung-volume", "value": "abc"},
		}})
		f.want(r, 400, `{"values":[{},{"non_field_errors":["JSON does not fulfill schema: instance \"abc\" is not of type 'number'"]}]}`)
		items := f.s.Items("demo")
		for _, it := range items {
			if it.PK == pk && it.Value("count") != nil {
				t.Fatalf("count was set by a refused PATCH")
			}
		}
	})
	t.Run("entry errors", func(t *testing.T) {
		cases := map[string]any{
			"two sources":    map[string]any{"interface": "count", "value": 3, "image": f.s.URL + "/api/v1/cases/images/x/"},
			"no source":      map[string]any{"interface": "count"},
			"unknown socket": map[string]any{"interface": "nope", "value": 1},
			"wrong source":   map[string]any{"interface": "ct-image", "value": 1},
			"integer":        map[string]any{"interface": "count", "value": 1.5},
		}
		for name, e := range cases {
			t.Run(name, func(t *testing.T) {
				f.want(f.do("PATCH", path, map[string]any{"values": []any{e}}), 400, "")
			})
		}
		r := f.do("PATCH", path, map[string]any{"values": []any{map[string]any{"interface": "ct-image", "user_uploads": []string{f.s.URL + "/api/v1/uploads/gone/"}}}})
		f.want(r, 400, `{"values":[{"user_uploads":["Invalid hyperlink - Object does not exist."]}]}`)
	})
	t.Run("hidden item", func(t *testing.T) {
		f.want(f.do("GET", path, nil, "-"), 404, `{"detail":"Not found."}`)
		f.want(f.do("GET", "/api/v1/archives/items/nope/", nil), 404, `{"detail":"Not found."}`)
	})
}

func TestPagination(t *testing.T) {
	f := newFixture(t, Options{Seed: 7})
	for i := range 250 {
		f.s.AddItem("demo", fmt.Sprintf("item %03d", i))
	}
	seen := map[string]bool{}
	var order []string
	for off := 0; off < 300; off += 100 {
		r := f.do("GET", fmt.Sprintf("/api/v1/archives/items/?archive=%s&limit=100&offset=%d", f.apk, off), nil)
		var p struct {
			Count   int
			Results []struct{ PK, Title string }
		}
		r.json(t, &p)
		if p.Count != 250 {
			t.Fatalf("count = %d, want 250", p.Count)
		}
		for _, it := range p.Results {
			seen[it.PK] = true
			order = append(order, it.Title)
		}
	}
	if len(seen) != 250 {
		t.Fatalf("walk saw %d distinct items, want 250", len(seen))
	}
	sorted := true
	for i := 1; i < len(order); i++ {
		if order[i] < order[i-1] {
			sorted = false
		}
	}
	if sorted {
		t.Fatal("items listed in creation order; the fake should not promise any order")
	}
	r := f.do("GET", "/api/v1/archives/items/?limit=5000", nil)
	var p struct{ Results []any }
	r.json(t, &p)
	if len(p.Results) != 250 {
		t.Fatalf("limit above 1000 returned %d, want all 250", len(p.Results))
	}
}

func TestHeapStaysSmallOnBigPart(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB part")
	}
	f := newFixture(t, Options{})
	u := f.createUpload("big.bin")
	url := f.presign(u, 1)["1"]
	const size = 64 << 20
	// Warm up the connection and buffers before measuring.
	f.putPart(url, []byte("warm"))
	var before, after runtimeMem
	before.read()
	req, err := http.NewRequest("PUT", url, &patternReader{left: size})
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = size
	res, err := f.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	after.read()
	if res.StatusCode != 200 {
		t.Fatalf("PUT status = %d", res.StatusCode)
	}
	if got := after.totalAlloc - before.totalAlloc; got > 16<<20 {
		t.Fatalf("allocated %d MiB while receiving a 64 MiB part; want it streamed", got>>20)
	}
	lp := f.do("GET", f.uploadPath(u, "list-parts"), nil)
	var parts uploadResp
	lp.json(t, &parts)
	if len(parts.Parts) != 1 || parts.Parts[0].Size != size {
		t.Fatalf("parts = %+v, want one of %d bytes", parts.Parts, size)
	}
}

// patternReader yields left bytes without allocating.
type patternReader struct{ left int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := min(int64(len(b)), p.left)
	for i := range b[:n] {
		b[i] = byte(i)
	}
	p.left -= n
	return int(n), nil
}
