package gcapitest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fixture is a server with one archive and a few sockets.
type fixture struct {
	t   *testing.T
	s   *Server
	hc  *http.Client
	arc string // archive api_url
	apk string // archive pk
}

func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	s := NewServer(opts)
	hc := s.Client()
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	t.Cleanup(func() {
		hc.CloseIdleConnections()
		s.Close()
	})
	ar := s.AddArchive("demo", "Demo")
	s.AddInterface("ct-image", "Image")
	s.AddInterface("lung-volume", "Float")
	s.AddInterface("count", "Integer")
	s.AddInterface("report", "PDF file")
	s.AddJSONFileInterface("measurements", "Anything")
	return &fixture{t: t, s: s, hc: hc, arc: ar.APIURL, apk: ar.PK}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// do sends a request with the valid token unless auth says otherwise
// ("-" for none).
func (f *fixture) do(method, path string, body any, auth ...string) resp {
	f.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			f.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	u := path
	if !strings.HasPrefix(path, "http") {
		u = f.s.URL + path
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	a := "Bearer " + f.s.Token()
	if len(auth) > 0 {
		a = auth[0]
	}
	if a != "-" {
		req.Header.Set("Authorization", a)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := f.hc.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		f.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp{res.StatusCode, res.Header, b}
}

func (f *fixture) want(r resp, status int, body string) {
	f.t.Helper()
	if r.status != status {
		f.t.Fatalf("status = %d (%s), want %d", r.status, r.body, status)
	}
	if body != "" && !jsonSame(r.body, []byte(body)) {
		f.t.Fatalf("body = %s, want %s", r.body, body)
	}
}

func jsonSame(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

type uploadResp struct {
	PK            string            `json:"pk"`
	S3UploadID    string            `json:"s3_upload_id"`
	Status        string            `json:"status"`
	APIURL        string            `json:"api_url"`
	PresignedURLs map[string]string `json:"presigned_urls"`
	Parts         []struct {
		ETag       string `json:"ETag"`
		PartNumber int    `json:"PartNumber"`
		Size       int64  `json:"Size"`
	} `json:"parts"`
}

func (f *fixture) createUpload(name string) uploadResp {
	f.t.Helper()
	r := f.do("POST", "/api/v1/uploads/", map[string]string{"filename": name})
	f.want(r, 201, "")
	var u uploadResp
	r.json(f.t, &u)
	return u
}

func (f *fixture) uploadPath(u uploadResp, action string) string {
	return "/api/v1/uploads/" + u.PK + "/" + u.S3UploadID + "/" + action + "/"
}

func (f *fixture) presign(u uploadResp, nums ...int) map[string]string {
	f.t.Helper()
	r := f.do("PATCH", f.uploadPath(u, "generate-presigned-urls"), map[string]any{"part_numbers": nums})
	f.want(r, 200, "")
	var out uploadResp
	r.json(f.t, &out)
	return out.PresignedURLs
}

// putPart PUTs bytes to a presigned URL without a token and returns the ETag.
func (f *fixture) putPart(url string, data []byte) string {
	f.t.Helper()
	r := f.do("PUT", url, data, "-")
	f.want(r, 200, "")
	return r.header.Get("ETag")
}

type partRef struct {
	ETag       string `json:"ETag"`
	PartNumber int    `json:"PartNumber"`
}

// uploadFile runs a whole upload of data as one part and completes it.
func (f *fixture) uploadFile(name string, data []byte) uploadResp {
	f.t.Helper()
	u := f.createUpload(name)
	urls := f.presign(u, 1)
	etag := f.putPart(urls["1"], data)
	r := f.do("PATCH", f.uploadPath(u, "complete-multipart-upload"), map[string]any{"parts": []partRef{{etag, 1}}})
	f.want(r, 200, "")
	r.json(f.t, &u)
	return u
}

func (f *fixture) createItem(title string) string {
	f.t.Helper()
	r := f.do("POST", "/api/v1/archives/items/", map[string]string{"archive": f.arc, "title": title})
	f.want(r, 201, "")
	var it struct{ PK string }
	r.json(f.t, &it)
	return it.PK
}

// poll waits for cond with a deadline.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
