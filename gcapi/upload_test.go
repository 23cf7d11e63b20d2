package gcapi

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLayout(t *testing.T) {
	tests := []struct {
		size, partSize int64
		wantPartSize   int64
		wantN          int
	}{
		{0, 0, DefaultPartSize, 1},
		{1, 0, DefaultPartSize, 1},
		{DefaultPartSize, 0, DefaultPartSize, 1},
		{DefaultPartSize + 1, 0, DefaultPartSize, 2},
		{100 << 20, 1 << 20, MinPartSize, 20},
		{10000 * MinPartSize, MinPartSize, MinPartSize, 10000},
		{10000*MinPartSize + 1, MinPartSize, MinPartSize + 1<<20, 8334},
	}
	for _, tt := range tests {
		l := newLayout(tt.size, tt.partSize)
		if l.partSize != tt.wantPartSize || l.n != tt.wantN {
			t.Errorf("newLayout(%d, %d) = %d parts of %d, want %d of %d", tt.size, tt.partSize, l.n, l.partSize, tt.wantN, tt.wantPartSize)
		}
		if l.n > maxParts {
			t.Errorf("newLayout(%d, %d): %d parts", tt.size, tt.partSize, l.n)
		}
		var sum int64
		for n := 1; n <= l.n; n++ {
			sum += l.length(n)
		}
		if sum != tt.size {
			t.Errorf("newLayout(%d, %d): parts add up to %d", tt.size, tt.partSize, sum)
		}
	}
}

func TestKeepParts(t *testing.T) {
	lay := newLayout(2*MinPartSize+10, MinPartSize) // parts 1, 2 full; 3 has 10 bytes
	listed := []Part{
		{ETag: `"a"`, PartNumber: 1, Size: MinPartSize},
		{ETag: `"b"`, PartNumber: 2, Size: MinPartSize - 1}, // short: sent again
		{ETag: `"c"`, PartNumber: 3, Size: 10},
		{ETag: `"d"`, PartNumber: 4, Size: 10}, // beyond the file
	}
	done := []Part{{ETag: `"other"`, PartNumber: 3}} // recorded with another ETag: sent again
	got := keepParts(listed, done, lay)
	if len(got) != 1 || got[1].ETag != `"a"` {
		t.Errorf("keepParts = %v, want only part 1", got)
	}
}

// fakeStore is a tiny uploads API on one host whose presigned URLs point
// at a second host, the "S3" store, so that the tests can see what each
// host receives.
type fakeStore struct {
	t        *testing.T
	api, s3  *httptest.Server
	mu       sync.Mutex
	parts    map[int][]byte
	presigns [][]int
	s3Auth   []string
	puts     map[int]int
	// expireFirst makes the URLs of the first presign batch answer 403.
	expireFirst bool
	completed   []Part
}

func newFakeStore(t *testing.T) *fakeStore {
	fs := &fakeStore{t: t, parts: map[int][]byte{}, puts: map[int]int{}}
	fs.s3 = httptest.NewServer(http.HandlerFunc(fs.serveS3))
	fs.api = httptest.NewServer(http.HandlerFunc(fs.serveAPI))
	t.Cleanup(fs.api.Close)
	t.Cleanup(fs.s3.Close)
	return fs
}

func (fs *fakeStore) upload(status string) map[string]any {
	return map[string]any{"pk": "u1", "filename": "ct.mha", "s3_upload_id": "s3id", "status": status,
		"api_url": fs.api.URL + "/api/v1/uploads/u1/"}
}

func (fs *fakeStore) serveAPI(w http.ResponseWriter, r *http.Request) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	switch {
	case r.Method == "POST" && r.URL.Path == "/api/v1/uploads/":
		w.WriteHeader(201)
		enc.Encode(fs.upload(UploadInitialized))
	case r.Method == "PATCH" && r.URL.Path == "/api/v1/uploads/u1/s3id/generate-presigned-urls/":
		var in struct {
			PartNumbers []int `json:"part_numbers"`
		}
		json.NewDecoder(r.Body).Decode(&in)
		fs.presigns = append(fs.presigns, in.PartNumbers)
		urls := map[string]string{}
		for _, n := range in.PartNumbers {
			urls[strconv.Itoa(n)] = fmt.Sprintf("%s/bucket/u1?partNumber=%d&X-Amz-Signature=sig%d", fs.s3.URL, n, len(fs.presigns))
		}
		out := fs.upload(UploadInitialized)
		out["presigned_urls"] = urls
		enc.Encode(out)
	case r.Method == "PATCH" && r.URL.Path == "/api/v1/uploads/u1/s3id/complete-multipart-upload/":
		var in struct {
			Parts []Part `json:"parts"`
		}
		json.NewDecoder(r.Body).Decode(&in)
		fs.completed = in.Parts
		enc.Encode(fs.upload(UploadCompleted))
	case r.Method == "PATCH" && r.URL.Path == "/api/v1/uploads/u1/s3id/abort-multipart-upload/":
		enc.Encode(fs.upload(UploadAborted))
	default:
		w.WriteHeader(404)
		fmt.Fprint(w, `{"detail":"Not found."}`)
	}
}

func (fs *fakeStore) serveS3(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.s3Auth = append(fs.s3Auth, r.Header.Get("Authorization"))
	if err != nil {
		w.WriteHeader(400)
		return
	}
	n, _ := strconv.Atoi(r.URL.Query().Get("partNumber"))
	fs.puts[n]++
	if fs.expireFirst && r.URL.Query().Get("X-Amz-Signature") == "sig1" {
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>`)
		return
	}
	if int64(len(b)) != r.ContentLength {
		w.WriteHeader(400)
		return
	}
	fs.parts[n] = b
	w.Header().Set("ETag", fmt.Sprintf(`"%x"`, md5.Sum(b)))
}

func testBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>9)
	}
	return b
}

func TestUploadFileToPresignedHost(t *testing.T) {
	for _, expire := range []bool{false, true} {
		t.Run(fmt.Sprintf("expired URLs %v", expire), func(t *testing.T) {
			fs := newFakeStore(t)
			fs.expireFirst = expire
			c, err := New(fs.api.URL, "secret-token", WithRetry(RetryPolicy{BaseDelay: time.Millisecond}))
			if err != nil {
				t.Fatal(err)
			}
			data := testBytes(3*MinPartSize + 1234)
			var progress int64
			var onPart []int
			var created *Upload
			u, err := c.UploadFile(context.Background(), FileUpload{
				Filename: "ct.mha", Body: bytes.NewReader(data), Size: int64(len(data)),
				PartSize: MinPartSize, PartConcurrency: 2,
				OnCreated: func(u *Upload) error { created = u; return nil },
				OnPart:    func(p Part) error { onPart = append(onPart, p.PartNumber); return nil },
				Progress:  func(n int64) { progress += n },
			})
			if err != nil {
				t.Fatal(err)
			}
			if u.Status != UploadCompleted || created == nil || created.PK != "u1" {
				t.Errorf("upload %+v, created %+v; want u1 Completed", u, created)
			}
			fs.mu.Lock()
			defer fs.mu.Unlock()
			for i, a := range fs.s3Auth {
				if a != "" {
					t.Errorf("PUT %d to the store carried Authorization %q", i, a)
				}
			}
			var got []byte
			for n := 1; n <= 4; n++ {
				got = append(got, fs.parts[n]...)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("the store holds %d bytes that differ from the %d sent", len(got), len(data))
			}
			if len(fs.completed) != 4 {
				t.Fatalf("completed with %d parts, want 4", len(fs.completed))
			}
			for i, p := range fs.completed {
				if p.PartNumber != i+1 || p.ETag != fmt.Sprintf(`"%x"`, md5.Sum(fs.parts[i+1])) {
					t.Errorf("complete part %d = %+v", i, p)
				}
			}
			if progress != int64(len(data)) {
				t.Errorf("progress adds up to %d, want %d", progress, len(data))
			}
			if len(onPart) != 4 {
				t.Errorf("OnPart called for %v, want 4 parts", onPart)
			}
			for _, b := range fs.presigns {
				if len(b) > urlBatch {
					t.Errorf("asked for %d URLs at once, want at most %d", len(b), urlBatch)
				}
			}
			if expire && len(fs.presigns) < 2 {
				t.Errorf("presigned URLs asked for %d times, want a second batch after the 403", len(fs.presigns))
			}
		})
	}
}

func TestDownloadRedirectWithoutToken(t *testing.T) {
	var targetAuth []string
	var mu sync.Mutex
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		targetAuth = append(targetAuth, r.Header.Get("Authorization"))
		mu.Unlock()
		if r.Header.Get("Authorization") != "" {
			w.WriteHeader(400) // like S3 with two credentials
			return
		}
		fmt.Fprint(w, "image bytes")
	}))
	defer target.Close()
	var apiAuth string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		apiAuth = r.Header.Get("Authorization")
		http.Redirect(w, r, target.URL+"/signed/ct.mha?Signature=s", http.StatusFound)
	}))
	defer api.Close()
	c, err := New(api.URL, "secret-token")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	n, err := c.Download(context.Background(), api.URL+"/media/images/i1/ct.mha", &buf)
	if err != nil {
		t.Fatal(err)
	}
	if buf.String() != "image bytes" || n != int64(buf.Len()) {
		t.Errorf("downloaded %d bytes %q, want \"image bytes\"", n, buf.String())
	}
	if apiAuth != "Bearer secret-token" {
		t.Errorf("API host got Authorization %q, want the token", apiAuth)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(targetAuth, "") != "" {
		t.Errorf("redirect target got Authorization %q", targetAuth)
	}
}

// countingLimiter records every WaitN.
type countingLimiter struct {
	mu    sync.Mutex
	waits []int
	burst int
}

func (l *countingLimiter) WaitN(ctx context.Context, n int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.waits = append(l.waits, n)
	return ctx.Err()
}

func (l *countingLimiter) Burst() int { return l.burst }

func TestUploadFileRateLimit(t *testing.T) {
	for _, burst := range []int{0, 100 << 10} {
		t.Run(fmt.Sprintf("burst %d", burst), func(t *testing.T) {
			fs := newFakeStore(t)
			lim := &countingLimiter{burst: burst}
			c, err := New(fs.api.URL, "secret-token", WithRateLimit(lim))
			if err != nil {
				t.Fatal(err)
			}
			data := testBytes(MinPartSize + 12345)
			if _, err := c.UploadFile(context.Background(), FileUpload{Filename: "ct.mha", Body: bytes.NewReader(data),
				Size: int64(len(data)), PartSize: MinPartSize}); err != nil {
				t.Fatal(err)
			}
			limit := limitChunk
			if burst > 0 {
				limit = burst
			}
			var sum int
			for _, n := range lim.waits {
				if n <= 0 || n > limit {
					t.Errorf("WaitN(%d), want 1..%d", n, limit)
				}
				sum += n
			}
			if sum != len(data) {
				t.Errorf("waited for %d bytes in all, want %d (each byte sent once)", sum, len(data))
			}
		})
	}
}

// noteAborts makes fs's API set *aborted when it is asked to abort an upload.
func (fs *fakeStore) noteAborts(aborted *bool) {
	api := fs.api.Config.Handler
	fs.api.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/abort-multipart-upload/") {
			*aborted = true
		}
		api.ServeHTTP(w, r)
	})
}

func TestUploadFileOnCreatedErrorAborts(t *testing.T) {
	fs := newFakeStore(t)
	var aborted bool
	fs.noteAborts(&aborted)
	c, err := New(fs.api.URL, "secret-token")
	if err != nil {
		t.Fatal(err)
	}
	data := testBytes(100)
	_, err = c.UploadFile(context.Background(), FileUpload{Filename: "ct.mha", Body: bytes.NewReader(data), Size: 100,
		OnCreated: func(*Upload) error { return fmt.Errorf("disk full") }})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err = %v, want the OnCreated error", err)
	}
	if !aborted {
		t.Error("the upload was not aborted")
	}
	if len(fs.puts) != 0 {
		t.Errorf("parts sent after OnCreated failed: %v", fs.puts)
	}
}

func TestDownloadCutMidBodyNotRepeated(t *testing.T) {
	var n atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(200)
		fmt.Fprint(w, "only part of it") // then the handler ends: the body is cut
	}))
	defer api.Close()
	c, err := New(api.URL, "secret-token", WithRetry(RetryPolicy{BaseDelay: time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	got, err := c.Download(context.Background(), api.URL+"/media/x/ct.mha", &buf)
	if err == nil || !IsTransient(err) {
		t.Fatalf("err = %v, want a transient error", err)
	}
	if got != int64(buf.Len()) || buf.String() != "only part of it" {
		t.Errorf("wrote %d bytes %q, want the part received once", got, buf.String())
	}
	if n.Load() != 1 {
		t.Errorf("%d requests; a download that wrote bytes must not be repeated into the same writer", n.Load())
	}
}

// BeforeComplete comes after the last part's PUT and before the complete;
// its error leaves the upload Initialized (not completed, not aborted), so
// the caller decides what becomes of it.
func TestUploadFileBeforeComplete(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		t.Run(fmt.Sprintf("refuse %v", refuse), func(t *testing.T) {
			fs := newFakeStore(t)
			var aborted bool
			fs.noteAborts(&aborted)
			c, err := New(fs.api.URL, "secret-token")
			if err != nil {
				t.Fatal(err)
			}
			data := testBytes(3*MinPartSize + 100)
			var partsAtCall int
			_, err = c.UploadFile(context.Background(), FileUpload{Filename: "ct.mha", Body: bytes.NewReader(data),
				Size: int64(len(data)), PartSize: MinPartSize,
				BeforeComplete: func(context.Context) error {
					fs.mu.Lock()
					defer fs.mu.Unlock()
					partsAtCall = len(fs.parts)
					if fs.completed != nil {
						t.Error("BeforeComplete called after the complete")
					}
					if refuse {
						return fmt.Errorf("already in the archive")
					}
					return nil
				}})
			if partsAtCall != 4 {
				t.Errorf("BeforeComplete saw %d parts at the store, want all 4", partsAtCall)
			}
			if refuse {
				if err == nil || !strings.Contains(err.Error(), "already in the archive") {
					t.Fatalf("err = %v, want BeforeComplete's", err)
				}
				if fs.completed != nil || aborted {
					t.Errorf("completed %v, aborted %v: want the upload left Initialized", fs.completed != nil, aborted)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(fs.completed) != 4 {
				t.Errorf("completed with %d parts, want 4", len(fs.completed))
			}
		})
	}
}
