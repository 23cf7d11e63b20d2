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
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// patternFile is a file of any size whose bytes are computed from their
// offset, so a test can upload tens of MiB without holding them.
type patternFile struct{ size int64 }

func patternByte(off int64) byte { return byte(off*7 + off>>9) }

func (f patternFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= f.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), f.size-off))
	for i := range n {
		p[i] = patternByte(off + int64(i))
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// hashingStore is an uploads API whose store keeps only the MD5 and length
// of each part it receives, so its own memory does not grow with the upload.
type hashingStore struct {
	api, s3 *httptest.Server
	mu      sync.Mutex
	sums    map[int][md5.Size]byte
	lens    map[int]int64
	done    []Part
}

func newHashingStore(t *testing.T) *hashingStore {
	hs := &hashingStore{sums: map[int][md5.Size]byte{}, lens: map[int]int64{}}
	hs.s3 = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := md5.New()
		got, err := io.Copy(h, r.Body)
		if err != nil || got != r.ContentLength {
			w.WriteHeader(400)
			return
		}
		n, _ := strconv.Atoi(r.URL.Query().Get("partNumber"))
		var sum [md5.Size]byte
		h.Sum(sum[:0])
		hs.mu.Lock()
		hs.sums[n], hs.lens[n] = sum, got
		hs.mu.Unlock()
		w.Header().Set("ETag", fmt.Sprintf(`"%x"`, sum))
	}))
	hs.api = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := map[string]any{"pk": "u1", "filename": "big.mha", "s3_upload_id": "s3id", "status": UploadInitialized}
		switch {
		case r.Method == "POST" && r.URL.Path == "/api/v1/uploads/":
			w.WriteHeader(201)
		case strings.HasSuffix(r.URL.Path, "/generate-presigned-urls/"):
			var in struct {
				PartNumbers []int `json:"part_numbers"`
			}
			json.NewDecoder(r.Body).Decode(&in)
			urls := map[string]string{}
			for _, n := range in.PartNumbers {
				urls[strconv.Itoa(n)] = fmt.Sprintf("%s/bucket/u1?partNumber=%d", hs.s3.URL, n)
			}
			up["presigned_urls"] = urls
		case strings.HasSuffix(r.URL.Path, "/complete-multipart-upload/"):
			var in struct {
				Parts []Part `json:"parts"`
			}
			json.NewDecoder(r.Body).Decode(&in)
			hs.mu.Lock()
			hs.done = in.Parts
			hs.mu.Unlock()
			up["status"] = UploadCompleted
		default:
			w.WriteHeader(404)
			return
		}
		json.NewEncoder(w).Encode(up)
	}))
	t.Cleanup(hs.api.Close)
	t.Cleanup(hs.s3.Close)
	return hs
}

// heapSampler samples the heap in use until stopped and returns the peak.
func heapSampler() (stop func() uint64) {
	done := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		var ms runtime.MemStats
		var top uint64
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			top = max(top, ms.HeapInuse)
			select {
			case <-done:
				peak <- top
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		return <-peak
	}
}

// An upload streams its parts from the file: the heap does not hold a
// copy of the parts in flight, whatever the part size.
func TestUploadFileHeapStaysSmall(t *testing.T) {
	const size, partSize, conc = 64 << 20, 8 << 20, 4
	hs := newHashingStore(t)
	c, err := New(hs.api.URL, "secret-token")
	if err != nil {
		t.Fatal(err)
	}
	var progress int64
	f := FileUpload{Filename: "big.mha", Body: patternFile{size}, Size: size, PartSize: partSize,
		PartConcurrency: conc, Progress: func(n int64) { progress += n }}

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.HeapInuse
	stop := heapSampler()
	u, err := c.UploadFile(context.Background(), f)
	peak := stop()
	if err != nil {
		t.Fatal(err)
	}
	if u.Status != UploadCompleted {
		t.Fatalf("status %s, want Completed", u.Status)
	}
	// Buffering whole parts would need conc × partSize (32 MiB); less
	// than one part's worth means no part is held whole.
	growth := int64(peak) - int64(before)
	t.Logf("heap in use grew by %.1f MiB during the upload", float64(growth)/(1<<20))
	if limit := int64(partSize); growth >= limit {
		t.Errorf("heap in use grew by %.1f MiB sending %d MiB parts %d at a time, want under %d MiB",
			float64(growth)/(1<<20), partSize>>20, conc, limit>>20)
	}

	hs.mu.Lock()
	defer hs.mu.Unlock()
	if len(hs.done) != size/partSize {
		t.Fatalf("completed with %d parts, want %d", len(hs.done), size/partSize)
	}
	for i, p := range hs.done {
		want := md5.New()
		io.Copy(want, io.NewSectionReader(patternFile{size}, int64(i)*partSize, partSize))
		if wantTag := fmt.Sprintf(`"%x"`, want.Sum(nil)); p.ETag != wantTag || hs.lens[p.PartNumber] != partSize {
			t.Errorf("part %d: store got %d bytes, ETag %s; want %d bytes, ETag %s", p.PartNumber, hs.lens[p.PartNumber], p.ETag, partSize, wantTag)
		}
	}
	if progress != size {
		t.Errorf("progress adds up to %d, want %d", progress, size)
	}
}

// A connection reset halfway through a part's body makes the part go again
// from its first byte: the store ends up with the right bytes, and progress
// does not count the first half twice.
func TestUploadFilePartResentWholeAfterReset(t *testing.T) {
	fs := newFakeStore(t)
	var mu sync.Mutex
	attempts := map[int]int{}
	s3 := fs.s3.Config.Handler
	fs.s3.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("partNumber"))
		mu.Lock()
		attempts[n]++
		first := attempts[n] == 1
		mu.Unlock()
		if n == 2 && first {
			// Take half the body, then cut the connection.
			io.CopyN(io.Discard, r.Body, r.ContentLength/2)
			reset(t, w)
			return
		}
		s3.ServeHTTP(w, r)
	})
	var retries atomic.Int32
	c, err := New(fs.api.URL, "secret-token", WithRetry(RetryPolicy{BaseDelay: time.Millisecond,
		OnRetry: func(context.Context, string, string, int, time.Duration, error) { retries.Add(1) }}))
	if err != nil {
		t.Fatal(err)
	}
	data := testBytes(3*MinPartSize + 777)
	var progress int64
	_, err = c.UploadFile(context.Background(), FileUpload{Filename: "ct.mha", Body: bytes.NewReader(data),
		Size: int64(len(data)), PartSize: MinPartSize, PartConcurrency: 2,
		Progress: func(n int64) { progress += n }})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if attempts[2] != 2 {
		t.Errorf("part 2 was PUT %d times, want 2 (cut, then whole)", attempts[2])
	}
	mu.Unlock()
	if retries.Load() == 0 {
		t.Error("OnRetry was not called for the cut part")
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	want2 := data[MinPartSize : 2*MinPartSize]
	if !bytes.Equal(fs.parts[2], want2) {
		t.Errorf("the store holds %d bytes for part 2 that differ from the %d of the file", len(fs.parts[2]), len(want2))
	}
	if len(fs.completed) != 4 {
		t.Fatalf("completed with %d parts, want 4", len(fs.completed))
	}
	if got, want := fs.completed[1].ETag, fmt.Sprintf(`"%x"`, md5.Sum(want2)); got != want {
		t.Errorf("part 2 completed with ETag %s, want the MD5 of its bytes %s", got, want)
	}
	if progress != int64(len(data)) {
		t.Errorf("progress adds up to %d, want %d (the cut half counted once)", progress, len(data))
	}
}

// A file shorter than the size given fails the upload at once: reading it
// again will not make it longer, so the part is not retried.
func TestUploadFileShortFileNotRetried(t *testing.T) {
	fs := newFakeStore(t)
	var mu sync.Mutex
	var puts int
	s3 := fs.s3.Config.Handler
	fs.s3.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		puts++
		mu.Unlock()
		s3.ServeHTTP(w, r)
	})
	c, err := New(fs.api.URL, "secret-token", WithRetry(RetryPolicy{BaseDelay: time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	data := testBytes(MinPartSize / 2)
	_, err = c.UploadFile(context.Background(), FileUpload{Filename: "ct.mha", Body: bytes.NewReader(data),
		Size: MinPartSize})
	if err == nil {
		t.Fatal("upload of a file shorter than its size succeeded")
	}
	if !IsPermanent(err) || !strings.Contains(err.Error(), "read part 1 of ct.mha") {
		t.Errorf("err = %v, want a permanent error reading part 1", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if puts > 1 {
		t.Errorf("part PUT %d times, want at most once", puts)
	}
}
