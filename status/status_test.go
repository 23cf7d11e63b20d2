package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeSource struct {
	mu      sync.Mutex
	rep     Report
	retried []string
}

func (f *fakeSource) Report(ctx context.Context, q Query) (*Report, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.rep
	r.Images = append([]Image(nil), f.rep.Images...)
	r.CountStates()
	return &r, nil
}

func (f *fakeSource) Retry(ctx context.Context, ids []string, failed bool) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if failed {
		for _, im := range f.rep.Images {
			if im.State == StateFailed {
				f.retried = append(f.retried, im.ID)
			}
		}
		return f.retried, nil
	}
	f.retried = append(f.retried, ids...)
	return ids, nil
}

// Forget dismisses the failed images among ids, as the agent does, and
// refuses the others naming their state.
func (f *fakeSource) Forget(ctx context.Context, ids []string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var done []string
	var errs []error
	for _, id := range ids {
		i := slices.IndexFunc(f.rep.Images, func(im Image) bool { return im.ID == id })
		switch {
		case i < 0:
			errs = append(errs, fmt.Errorf("image %s: no such image", id))
		case f.rep.Images[i].State != StateFailed:
			errs = append(errs, fmt.Errorf("image %s is %s, not failed", id, f.rep.Images[i].State))
		default:
			f.rep.Images[i].State = StateDismissed
			done = append(done, id)
		}
	}
	return done, errors.Join(errs...)
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func sample() *fakeSource {
	return &fakeSource{rep: Report{Version: "v1.2.3", Started: t0, Images: []Image{
		{ID: "a1", Watch: "/data/in", Key: "case1/ct.mha", Title: "case1/ct.mha [3f9a1c2b7e4d]", State: StateUploading,
			Files: []string{"case1/ct.mha"}, BytesSent: 25 << 20, BytesTotal: 100 << 20, Attempts: 1},
		{ID: "b2", Watch: "/data/in", Key: "case2/ct.mha", State: StateFailed, Files: []string{"case2/ct.mha"},
			Attempts: 1, LastError: "import failed:\n  not a valid image"},
		{ID: "c3", Watch: "/data/in", Key: "case3.mhd", State: StateRetrying, Files: []string{"case3.mhd", "case3.raw"},
			Attempts: 3, LastError: "503 Service Unavailable", NextAttempt: t0.Add(90 * time.Second)},
		{ID: "d4", Watch: "/data/in", Key: "case4.nii.gz", State: StateFinished, Files: []string{"case4.nii.gz"},
			BytesSent: 2048, BytesTotal: 2048, ItemPK: "0c5b", ImagePK: "9e1d"},
	}}}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestStatusJSON(t *testing.T) {
	srv := httptest.NewServer(Handler(sample(), NewMetrics(), discard()))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rep Report
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		t.Fatal(err)
	}
	if got, want := len(rep.Images), 4; got != want {
		t.Fatalf("images = %d, want %d", got, want)
	}
	if got, want := rep.Counts[StateFailed], 1; got != want {
		t.Errorf("counts[failed] = %d, want %d", got, want)
	}
	if got, want := rep.Images[2].NextAttempt, t0.Add(90*time.Second); !got.Equal(want) {
		t.Errorf("next attempt = %v, want %v", got, want)
	}
	if got, want := rep.Images[3].ItemPK, "0c5b"; got != want {
		t.Errorf("item pk = %q, want %q", got, want)
	}
}

func TestHealthz(t *testing.T) {
	srv := httptest.NewServer(Handler(sample(), nil, discard()))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d", resp.StatusCode)
	}
}

func TestMetrics(t *testing.T) {
	m := NewMetrics()
	m.AddBytesUploaded(1000)
	m.AddBytesUploaded(24)
	m.SetQueueDepth(7)
	m.UploadSucceeded(time.Unix(1700000000, 0))
	m.ObserveRequest("GET", "/api/v1/archives/items/0c5b1a2e-7d2c-4a55-9a3e-1f0e2d3c4b5a/", 30*time.Millisecond, 200, nil)
	m.ObserveRequest("GET", "/api/v1/archives/items/11111111-7d2c-4a55-9a3e-1f0e2d3c4b5a/", 3*time.Second, 503, nil)
	m.ObserveRequest("PUT", "/s3/uploads/1/abc", time.Second, 0, errors.New("connection reset"))

	srv := httptest.NewServer(Handler(sample(), m, discard()))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	got := string(b)
	for _, want := range []string{
		`gcingest_images{state="failed"} 1`,
		`gcingest_images{state="pending"} 0`,
		"gcingest_uploaded_bytes_total 1024\n",
		"gcingest_queue_depth 7\n",
		"gcingest_last_upload_success_timestamp_seconds 1.7e+09\n",
		`gcingest_http_request_duration_seconds_bucket{method="GET",endpoint="/api/v1/archives/items/{pk}/",le="0.05"} 1`,
		`gcingest_http_request_duration_seconds_bucket{method="GET",endpoint="/api/v1/archives/items/{pk}/",le="+Inf"} 2`,
		`gcingest_http_request_duration_seconds_count{method="GET",endpoint="/api/v1/archives/items/{pk}/"} 2`,
		`gcingest_http_request_errors_total{method="GET",endpoint="/api/v1/archives/items/{pk}/",code="503"} 1`,
		`gcingest_http_request_errors_total{method="PUT",endpoint="(storage)",code="network"} 1`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("metrics lack %s\n%s", want, got)
		}
	}
	// Every sample line must be "name{labels} value" or "name value".
	for _, line := range strings.Split(strings.TrimSpace(got), "\n") {
		if strings.HasPrefix(line, "# ") {
			continue
		}
		if f := strings.Fields(line); len(f) != 2 {
			t.Errorf("malformed sample line %q", line)
		}
	}
}

func TestNormalizePath(t *testing.T) {
	tests := map[string]string{
		"/api/v1/archives/": "/api/v1/archives/",
		"/api/v1/archives/items/0c5b1a2e-7d2c-4a55-9a3e-1f0e2d3c4b5a/":                               "/api/v1/archives/items/{pk}/",
		"/api/v1/uploads/0c5b1a2e-7d2c-4a55-9a3e-1f0e2d3c4b5a/Xy.Z_9abcDEF/generate-presigned-urls/": "/api/v1/uploads/{pk}/{pk}/generate-presigned-urls/",
		"/api/v1/components/interfaces/":                                                             "/api/v1/components/interfaces/",
		"/api/v1/cases/images/42/":                                                                   "/api/v1/cases/images/{pk}/",
		"/s3/uploads/7/0c5b1a2e":                                                                     "(storage)",
		"/media/images/1/ct.mha":                                                                     "(storage)",
	}
	for in, want := range tests {
		if got := NormalizePath(in); got != want {
			t.Errorf("NormalizePath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestInstrumentTransport(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if strings.Contains(r.URL.Path, "missing") {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "{}")
	}))
	defer backend.Close()
	m := NewMetrics()
	hc := &http.Client{Transport: m.InstrumentTransport(nil)}
	for _, p := range []string{"/api/v1/archives/", "/api/v1/cases/images/missing-1/"} {
		resp, err := hc.Get(backend.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	req, _ := http.NewRequest(http.MethodPut, backend.URL+"/s3/uploads/2/abc?partNumber=1", strings.NewReader(strings.Repeat("x", 5000)))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var buf bytes.Buffer
	m.write(&buf, nil)
	if !strings.Contains(buf.String(), `gcingest_http_request_duration_seconds_count{method="GET",endpoint="/api/v1/archives/"} 1`) {
		t.Errorf("request not recorded:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), "gcingest_uploaded_bytes_total 5000\n") {
		t.Errorf("part PUT bytes not counted:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), `code="404"} 1`) {
		t.Errorf("404 not counted as an error:\n%s", buf.String())
	}
}

func TestServeRealListenerAndClient(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	src := sample()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, src, NewMetrics(), discard()) }()

	rep, err := Fetch(context.Background(), addr, Query{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rep.Version, "v1.2.3"; got != want {
		t.Errorf("version = %q, want %q", got, want)
	}
	queued, err := PostRetry(context.Background(), addr, RetryRequest{Failed: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(queued) != 1 || queued[0] != "b2" {
		t.Errorf("queued = %q, want [b2]", queued)
	}

	// A second listener on the same port fails with a clear message.
	_, err = Listen(addr)
	if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("second listen: got %v, want 'already in use' naming %s", err, addr)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("ServeListener after cancel: %v", err)
	}
	_, err = Fetch(context.Background(), addr, Query{})
	if !errors.Is(err, ErrNotRunning) {
		t.Errorf("Fetch with nothing listening: got %v, want ErrNotRunning", err)
	}
}

func TestListenRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:9187"} {
		_, err := Listen(addr)
		if !errors.Is(err, ErrNotLoopback) {
			t.Errorf("Listen(%q) = %v, want ErrNotLoopback", addr, err)
		}
	}
	ln, err := Listen("[::1]:0")
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			t.Skip("no IPv6 loopback here")
		}
		t.Fatal(err)
	}
	ln.Close()
}

func TestWriteTable(t *testing.T) {
	src := sample()
	rep, _ := src.Report(context.Background(), Query{All: true})
	var buf bytes.Buffer
	if err := rep.WriteTable(&buf, t0); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	for _, want := range []string{"25% of 100.0 MiB", "in 1m30s", "import failed: not a valid image", "0c5b",
		"4 images: uploading 1, finished 1, retrying 1, failed 1"} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}

// TestListenerRefusesBrowserRequests plays a web page that reaches the
// loopback listener through the operator's browser: by DNS rebinding (its
// own host name now resolving to 127.0.0.1) and by a cross-site POST.
func TestListenerRefusesBrowserRequests(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	src := sample()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, src, NewMetrics(), discard()) }()
	defer func() {
		cancel()
		<-done
	}()

	do := func(t *testing.T, method, host, path, ctype, origin, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	const retryBody = `{"failed":true}`
	tests := []struct {
		name, method, host, path, ctype, origin string
		ok                                      bool
	}{
		{"status by address", "GET", addr, "/status", "", "", true},
		{"status by localhost", "GET", "localhost:" + port, "/status", "", "", true},
		{"status by localhost without port", "GET", "localhost", "/status", "", "", true},
		{"status by ::1", "GET", "[::1]:" + port, "/status", "", "", true},
		{"status by a rebound name", "GET", "evil.example:" + port, "/status", "", "", false},
		{"status by a rebound name without port", "GET", "evil.example", "/status", "", "", false},
		{"metrics by a rebound name", "GET", "attacker.test", "/metrics", "", "", false},
		{"status by a LAN address", "GET", "192.168.1.5:" + port, "/status", "", "", false},
		{"retry as gcingest sends it", "POST", addr, "/retry", "application/json", "", true},
		{"retry as text/plain", "POST", addr, "/retry", "text/plain", "", false},
		{"retry as a form", "POST", addr, "/retry", "application/x-www-form-urlencoded", "", false},
		{"retry without content type", "POST", addr, "/retry", "", "", false},
		{"retry from another site", "POST", addr, "/retry", "application/json", "https://evil.example", false},
		{"retry from another local port", "POST", addr, "/retry", "application/json", "http://127.0.0.1:1", false},
		{"retry from a sandboxed page", "POST", addr, "/retry", "application/json", "null", false},
		{"retry from its own origin", "POST", addr, "/retry", "application/json; charset=utf-8", "http://" + addr, true},
		{"retry by a rebound name", "POST", "evil.example:" + port, "/retry", "application/json", "http://evil.example:" + port, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src.mu.Lock()
			before := len(src.retried)
			src.mu.Unlock()
			code, body := do(t, tt.method, tt.host, tt.path, tt.ctype, tt.origin, retryBody)
			src.mu.Lock()
			retried := len(src.retried) > before
			src.mu.Unlock()
			if got := code == http.StatusOK; got != tt.ok {
				t.Errorf("%s %s (Host %s) = %d %q; want accepted: %v", tt.method, tt.path, tt.host, code, body, tt.ok)
			}
			if tt.method == "POST" && retried != tt.ok {
				t.Errorf("images retried: %v, want %v", retried, tt.ok)
			}
			if !tt.ok && strings.Contains(body, "case1/ct.mha") {
				t.Errorf("refused answer still names files: %q", body)
			}
		})
	}
}

// The bytes counter moves while a part is on the wire, not only once the
// storage answered: the backend looks at the counter after reading half of
// the part and before answering.
func TestUploadedBytesCountDuringAPart(t *testing.T) {
	m := NewMetrics()
	var midway int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.CopyN(io.Discard, r.Body, 1<<20)
		// The client may have read ahead of what the server consumed, but
		// never less than that.
		m.mu.Lock()
		midway = m.bytes
		m.mu.Unlock()
		io.Copy(io.Discard, r.Body)
	}))
	defer backend.Close()
	hc := &http.Client{Transport: m.InstrumentTransport(nil)}
	req, _ := http.NewRequest(http.MethodPut, backend.URL+"/s3/uploads/1/abc?partNumber=1", strings.NewReader(strings.Repeat("x", 2<<20)))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if midway < 1<<20 {
		t.Errorf("counter at %d bytes after the server read 1 MiB of the part, want at least %d", midway, 1<<20)
	}
	m.mu.Lock()
	got := m.bytes
	m.mu.Unlock()
	if got != 2<<20 {
		t.Errorf("counter at %d after the part, want %d", got, 2<<20)
	}
}

// TestForget dismisses images through a running agent's listener: the
// failed one is dismissed and leaves the failed count in /metrics, the
// finished one is refused with its state named, and a request a web page
// could send is refused before anything is dismissed.
func TestForget(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	src := sample()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, src, NewMetrics(), discard()) }()
	defer func() { cancel(); <-done }()

	for _, origin := range []string{"https://evil.example", "null"} {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/forget", strings.NewReader(`{"ids":["b2"]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", origin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("forget from origin %s: %s; want 403", origin, resp.Status)
		}
	}
	if rep, _ := Fetch(context.Background(), addr, Query{All: true}); rep.Counts[StateFailed] != 1 {
		t.Fatalf("a refused request dismissed an image: counts %v", rep.Counts)
	}

	forgotten, err := PostForget(context.Background(), addr, []string{"b2", "d4"})
	if !slices.Equal(forgotten, []string{"b2"}) {
		t.Errorf("forgotten = %q; want [b2]", forgotten)
	}
	if err == nil || !strings.Contains(err.Error(), "image d4 is finished, not failed") {
		t.Errorf("err = %v; want the refusal of d4 naming its state", err)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`gcingest_images{state="failed"} 0` + "\n", `gcingest_images{state="dismissed"} 1` + "\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q:\n%s", want, b)
		}
	}
}
