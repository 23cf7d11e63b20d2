package gcapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNewBaseURL(t *testing.T) {
	tests := []struct {
		name, in string
		opts     []Option
		want     string // "" = error
	}{
		{"host only", "https://gc.example", nil, "https://gc.example/api/v1/"},
		{"api root without slash", "https://gc.example/api/v1", nil, "https://gc.example/api/v1/"},
		{"api root with slash", "https://gc.example/api/v1/", nil, "https://gc.example/api/v1/"},
		{"prefix path", "https://gc.example/gc/", nil, "https://gc.example/gc/api/v1/"},
		{"plain http refused", "http://gc.example", nil, ""},
		{"plain http allowed", "http://gc.example", []Option{WithInsecureHTTP()}, "http://gc.example/api/v1/"},
		{"http loopback v4", "http://127.0.0.1:8000", nil, "http://127.0.0.1:8000/api/v1/"},
		{"http loopback v4 range", "http://127.9.9.9", nil, "http://127.9.9.9/api/v1/"},
		{"http loopback v6", "http://[::1]:8000/", nil, "http://[::1]:8000/api/v1/"},
		{"http localhost", "http://localhost:8000", nil, "http://localhost:8000/api/v1/"},
		{"http lan address refused", "http://192.168.1.2", nil, ""},
		{"other scheme", "ftp://gc.example", nil, ""},
		{"user info", "https://me:pw@gc.example", nil, ""},
		{"query", "https://gc.example/?x=1", nil, ""},
		{"no host", "https:///api/v1/", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.in, "tok", tt.opts...)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("New(%q) = %s, want error", tt.in, c.BaseURL())
				}
				return
			}
			if err != nil {
				t.Fatalf("New(%q): %v", tt.in, err)
			}
			if got := c.BaseURL(); got != tt.want {
				t.Errorf("BaseURL() = %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := New("https://gc.example", "  "); err == nil {
		t.Error("New with an empty token: no error")
	}
}

// recorder is an httptest handler that answers from a script and records
// what it saw.
type recorder struct {
	mu     sync.Mutex
	reqs   []*http.Request
	answer func(n int, w http.ResponseWriter, r *http.Request) // n: 0-based request index
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	n := len(rc.reqs)
	rc.reqs = append(rc.reqs, r)
	rc.mu.Unlock()
	rc.answer(n, w, r)
}

func (rc *recorder) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.reqs)
}

func (rc *recorder) req(i int) *http.Request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.reqs[i]
}

func newTestClient(t *testing.T, h http.Handler, opts ...Option) (*Client, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	opts = append([]Option{WithRetry(RetryPolicy{BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond})}, opts...)
	c, err := New(srv.URL, "Bearer  secret-token", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c, srv
}

func TestRequestHeadersAndPaths(t *testing.T) {
	rc := &recorder{answer: func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"pk":"img1","name":"ct.mha","files":[],"api_url":"x"}`)
	}}
	c, _ := newTestClient(t, rc, WithUserAgent("gcingest/1.2.3"))
	img, err := c.Image(context.Background(), "img1")
	if err != nil {
		t.Fatal(err)
	}
	if img.Name != "ct.mha" {
		t.Errorf("Name = %q, want ct.mha", img.Name)
	}
	r := rc.req(0)
	for h, want := range map[string]string{
		"Authorization": "Bearer secret-token",
		"Accept":        "application/json",
		"User-Agent":    "gcingest/1.2.3",
	} {
		if got := r.Header.Get(h); got != want {
			t.Errorf("header %s = %q, want %q", h, got, want)
		}
	}
	if got, want := r.URL.Path, "/api/v1/cases/images/img1/"; got != want {
		t.Errorf("path = %q, want %q", got, want)
	}
}

func TestRefusesURLOnAnotherHost(t *testing.T) {
	other := &recorder{answer: func(int, http.ResponseWriter, *http.Request) {}}
	otherSrv := httptest.NewServer(other)
	defer otherSrv.Close()
	rc := &recorder{answer: func(int, http.ResponseWriter, *http.Request) {}}
	c, _ := newTestClient(t, rc)
	ctx := context.Background()
	if _, err := c.Image(ctx, otherSrv.URL+"/api/v1/cases/images/x/"); err == nil {
		t.Error("Image on another host: no error")
	}
	var sb strings.Builder
	if _, err := c.Download(ctx, otherSrv.URL+"/media/images/x/ct.mha", &sb); err == nil {
		t.Error("Download from another host: no error")
	}
	if got := other.count() + rc.count(); got != 0 {
		t.Errorf("%d requests sent, want none", got)
	}
}

func TestAPIRedirectNotFollowed(t *testing.T) {
	target := &recorder{answer: func(int, http.ResponseWriter, *http.Request) {}}
	targetSrv := httptest.NewServer(target)
	defer targetSrv.Close()
	rc := &recorder{answer: func(n int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, targetSrv.URL+"/steal/", http.StatusFound)
	}}
	c, _ := newTestClient(t, rc)
	_, err := c.ArchiveItem(context.Background(), "abc")
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusFound {
		t.Fatalf("err = %v, want *Error with status 302", err)
	}
	if target.count() != 0 {
		t.Error("the redirect target was requested")
	}
}

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		name, ctype, body, want string
	}{
		{"detail", "application/json", `{"detail": "Invalid token."}`, "Invalid token."},
		{"field object", "application/json", `{"filename": ["../x is not a valid filename"]}`, "filename: ../x is not a valid filename"},
		{"two fields", "application/json", `{"b": ["y"], "a": ["x", "z"]}`, "a: x; z; b: y"},
		{"bare list", "application/json", `["Values can only be added via update"]`, "Values can only be added via update"},
		{"nested values", "application/json", `{"values": [{}, {"non_field_errors": ["value is required"]}]}`, "values[1].non_field_errors: value is required"},
		{"title conflict", "application/json", `{"non_field_errors": ["The fields title, archive must make a unique set."]}`,
			"non_field_errors: The fields title, archive must make a unique set."},
		{"s3 xml", "application/xml", `<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>`, "AccessDenied: Request has expired"},
		{"html page", "text/html", `<html><body>Server Error</body></html>`, ""},
		{"plain text", "text/plain", "upstream timed out\n", "upstream timed out"},
		{"empty", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errorMessage(tt.ctype, []byte(tt.body)); got != tt.want {
				t.Errorf("errorMessage(%s) = %q, want %q", tt.body, got, tt.want)
			}
		})
	}
}

func TestErrorFromServer(t *testing.T) {
	rc := &recorder{answer: func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"non_field_errors": ["The fields title, archive must make a unique set."]}`)
	}}
	c, srv := newTestClient(t, rc)
	_, err := c.CreateArchiveItem(context.Background(), srv.URL+"/api/v1/archives/a1/", "case 1")
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v, want *Error", err)
	}
	if e.Method != http.MethodPost || e.StatusCode != 400 || e.URL != srv.URL+"/api/v1/archives/items/" {
		t.Errorf("error = %s %s %d, want POST %s 400", e.Method, e.URL, e.StatusCode, srv.URL+"/api/v1/archives/items/")
	}
	if !IsTitleConflict(err) || !IsPermanent(err) || IsTransient(err) {
		t.Errorf("IsTitleConflict/IsPermanent/IsTransient = %v/%v/%v, want true/true/false",
			IsTitleConflict(err), IsPermanent(err), IsTransient(err))
	}
	if rc.count() != 1 {
		t.Errorf("%d requests, want 1 (a 400 is not retried)", rc.count())
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{"-1", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"soon", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// reset closes the connection without an answer, after reading the request.
func reset(t *testing.T, w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		t.Error("response writer cannot hijack")
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		t.Error(err)
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // RST, not FIN
	}
	conn.Close()
}

func TestRetryClasses(t *testing.T) {
	okItem := `{"pk":"i1","title":"t","archive":"a","values":[]}`
	type step func(t *testing.T, w http.ResponseWriter, r *http.Request)
	status := func(code int) step {
		return func(t *testing.T, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			if code < 300 {
				fmt.Fprint(w, okItem)
			} else {
				fmt.Fprint(w, `{"detail":"x"}`)
			}
		}
	}
	resetStep := func(t *testing.T, w http.ResponseWriter, r *http.Request) { reset(t, w) }
	stall := func(t *testing.T, w http.ResponseWriter, r *http.Request) {
		// Read the body first: only then does the server notice the
		// client hanging up.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
			t.Error("client did not give up on a stalled request")
		}
	}
	tests := []struct {
		name         string
		create       bool // POST item, or GET item
		steps        []step
		wantRequests int
		wantErr      bool
		transient    bool // of the error, when wantErr
	}{
		{"GET 502 503 504 then ok", false, []step{status(502), status(503), status(504), status(200)}, 4, false, false},
		{"POST 503 not repeated", true, []step{status(503), status(201)}, 1, true, true},
		{"POST 502 not repeated", true, []step{status(502), status(201)}, 1, true, true},
		{"POST 504 not repeated", true, []step{status(504), status(201)}, 1, true, true},
		{"POST 429 then ok", true, []step{status(429), status(201)}, 2, false, false},
		{"GET 507 then ok", false, []step{status(507), status(200)}, 2, false, false},
		{"GET 500 then ok", false, []step{status(500), status(200)}, 2, false, false},
		{"GET 500 three times", false, []step{status(500), status(500), status(500), status(200)}, 3, true, false},
		{"POST 500 not repeated", true, []step{status(500), status(201)}, 1, true, false},
		{"GET reset then ok", false, []step{resetStep, status(200)}, 2, false, false},
		{"POST reset not repeated", true, []step{resetStep, status(201)}, 1, true, true},
		{"GET stall then ok", false, []step{stall, status(200)}, 2, false, false},
		{"POST stall not repeated", true, []step{stall, status(201)}, 1, true, true},
		{"GET 404 not repeated", false, []step{status(404), status(200)}, 1, true, false},
		{"GET 503 until attempts run out", false, []step{status(503), status(503), status(503), status(503)}, 4, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := &recorder{answer: func(n int, w http.ResponseWriter, r *http.Request) {
				if n >= len(tt.steps) {
					t.Errorf("request %d not expected", n+1)
					w.WriteHeader(http.StatusTeapot)
					return
				}
				tt.steps[n](t, w, r)
			}}
			var retries int
			c, srv := newTestClient(t, rc, WithStallTimeout(100*time.Millisecond), WithRetry(RetryPolicy{
				MaxAttempts: 4, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond,
				OnRetry: func(context.Context, string, string, int, time.Duration, error) { retries++ },
			}))
			ctx := context.Background()
			var err error
			if tt.create {
				_, err = c.CreateArchiveItem(ctx, srv.URL+"/api/v1/archives/a/", "t")
			} else {
				_, err = c.ArchiveItem(ctx, "i1")
			}
			if got := rc.count(); got != tt.wantRequests {
				t.Errorf("%d requests, want %d", got, tt.wantRequests)
			}
			if retries != tt.wantRequests-1 {
				t.Errorf("OnRetry called %d times, want %d", retries, tt.wantRequests-1)
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tt.wantErr)
			}
			if err != nil && IsTransient(err) != tt.transient {
				t.Errorf("IsTransient(%v) = %v, want %v", err, IsTransient(err), tt.transient)
			}
		})
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	rc := &recorder{answer: func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 0 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		fmt.Fprint(w, `{"pk":"i1"}`)
	}}
	var waits []time.Duration
	c, _ := newTestClient(t, rc, WithRetry(RetryPolicy{BaseDelay: time.Millisecond, MaxDelay: time.Second,
		OnRetry: func(_ context.Context, _, _ string, _ int, wait time.Duration, _ error) { waits = append(waits, wait) }}))
	start := time.Now()
	if _, err := c.ArchiveItem(context.Background(), "i1"); err != nil {
		t.Fatal(err)
	}
	if len(waits) != 1 || waits[0] != time.Second {
		t.Errorf("waits = %v, want [1s] from Retry-After", waits)
	}
	// The wait is a decision, not a speed claim: the second request must
	// not come before the server allowed it.
	if second := rc.req(1); second != nil && time.Since(start) < time.Second {
		t.Errorf("retried %v after a Retry-After of 1s", time.Since(start))
	}
}

func TestRetryStopsOnCancel(t *testing.T) {
	rc := &recorder{answer: func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusServiceUnavailable)
	}}
	ctx, cancel := context.WithCancel(context.Background())
	c, _ := newTestClient(t, rc, WithRetry(RetryPolicy{MaxDelay: time.Hour,
		OnRetry: func(context.Context, string, string, int, time.Duration, error) { cancel() }}))
	_, err := c.ArchiveItem(ctx, "i1")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if IsTransient(err) || IsPermanent(err) {
		t.Errorf("IsTransient/IsPermanent(cancel) = %v/%v, want false/false", IsTransient(err), IsPermanent(err))
	}
	if rc.count() != 1 {
		t.Errorf("%d requests, want 1", rc.count())
	}
}

func TestCreateRetriedWhenConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	var retries int
	c, err := New("http://"+addr, "tok", WithRetry(RetryPolicy{MaxAttempts: 3, BaseDelay: time.Millisecond,
		OnRetry: func(context.Context, string, string, int, time.Duration, error) { retries++ }}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateUpload(context.Background(), "ct.mha")
	if err == nil || !IsTransient(err) {
		t.Fatalf("err = %v, want a transient error", err)
	}
	if retries != 2 {
		t.Errorf("%d retries, want 2: a refused connection never reached the server", retries)
	}
}

func TestPaginationDedupe(t *testing.T) {
	items := func(lo, hi int) []string {
		var s []string
		for i := lo; i < hi; i++ {
			s = append(s, fmt.Sprintf("it%03d", i))
		}
		return s
	}
	page := func(w http.ResponseWriter, r *http.Request, all []string) {
		q := r.URL.Query()
		var off, lim int
		fmt.Sscan(q.Get("offset"), &off)
		fmt.Sscan(q.Get("limit"), &lim)
		var res []string
		for i := off; i < len(all) && i < off+lim; i++ {
			res = append(res, fmt.Sprintf(`{"pk":%q,"title":%q}`, all[i], all[i]))
		}
		fmt.Fprintf(w, `{"count":%d,"next":null,"previous":null,"results":[%s]}`, len(all), strings.Join(res, ","))
	}
	reverse := func(s []string) []string {
		r := make([]string, len(s))
		for i := range s {
			r[len(s)-1-i] = s[i]
		}
		return r
	}
	t.Run("order changes between pages", func(t *testing.T) {
		all := items(0, pageLimit*3/2) // two pages
		rc := &recorder{answer: func(n int, w http.ResponseWriter, r *http.Request) {
			if n%3 == 1 { // the second page of the first walk sees another order
				page(w, r, reverse(all))
				return
			}
			page(w, r, all)
		}}
		c, _ := newTestClient(t, rc)
		got, err := c.ArchiveItems(context.Background(), "a1")
		if err != nil {
			t.Fatal(err)
		}
		checkItems(t, got, all)
		if rc.count() != 4 {
			t.Errorf("%d requests, want 4 (two walks of two pages)", rc.count())
		}
	})
	t.Run("item added during the walk", func(t *testing.T) {
		before := items(1, pageLimit*3/2+1)           // two pages
		after := append([]string{"it000"}, before...) // a new row sorts first
		rc := &recorder{answer: func(n int, w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("archive") != "a1" {
				t.Errorf("query %q lacks archive=a1", r.URL.RawQuery)
			}
			if n == 0 {
				page(w, r, before)
				return
			}
			page(w, r, after)
		}}
		c, _ := newTestClient(t, rc)
		got, err := c.ArchiveItems(context.Background(), "a1")
		if err != nil {
			t.Fatal(err)
		}
		checkItems(t, got, after)
	})
	t.Run("title lookup", func(t *testing.T) {
		all := items(0, pageLimit+pageLimit/5) // the title on the second page
		last := all[len(all)-10]
		rc := &recorder{answer: func(n int, w http.ResponseWriter, r *http.Request) { page(w, r, all) }}
		c, _ := newTestClient(t, rc)
		it, err := c.ArchiveItemByTitle(context.Background(), "a1", last)
		if err != nil || it == nil || it.PK != last {
			t.Fatalf("ArchiveItemByTitle(%s) = %v, %v; want item %s", last, it, err, last)
		}
		it, err = c.ArchiveItemByTitle(context.Background(), "a1", "nope")
		if err != nil || it != nil {
			t.Fatalf("ArchiveItemByTitle(nope) = %v, %v; want nil, nil", it, err)
		}
	})
}

func checkItems(t *testing.T, got []ArchiveItem, want []string) {
	t.Helper()
	seen := map[string]int{}
	for _, it := range got {
		seen[it.PK]++
	}
	for pk, n := range seen {
		if n > 1 {
			t.Errorf("item %s returned %d times", pk, n)
		}
	}
	for _, pk := range want {
		if seen[pk] == 0 {
			t.Errorf("item %s missing", pk)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d items, want %d", len(got), len(want))
	}
}

// TestS3RefusalsOfAPartAreTransient: S3's 400s to a part PUT that a new
// attempt with fresh presigned URLs heals are transient; other 400s are not.
func TestS3RefusalsOfAPartAreTransient(t *testing.T) {
	for _, tt := range []struct {
		code      string
		transient bool
	}{
		{"RequestTimeout", true},
		{"ExpiredToken", true},
		{"RequestExpired", true},
		{"TokenRefreshRequired", true},
		{"InvalidPart", false},
		{"SignatureDoesNotMatch", false},
	} {
		err := &Error{Method: http.MethodPut, URL: "https://s3.example/b/k", StatusCode: http.StatusBadRequest,
			Body: []byte("<?xml version=\"1.0\"?><Error><Code>" + tt.code + "</Code><Message>m</Message></Error>")}
		if got := IsTransient(err); got != tt.transient {
			t.Errorf("IsTransient(S3 400 %s) = %v, want %v", tt.code, got, tt.transient)
		}
		if got := IsPermanent(err); got == tt.transient {
			t.Errorf("IsPermanent(S3 400 %s) = %v, want %v", tt.code, got, !tt.transient)
		}
	}
}

func TestInterfacesInUse(t *testing.T) {
	ct := Interface{Slug: "ct-image"}
	seg := Interface{Slug: "segmentation"}
	items := []ArchiveItem{
		{Values: []ItemValue{{Interface: ct}, {Interface: seg}}},
		{Values: []ItemValue{{Interface: ct}}},
		{},
	}
	ifaces, used := InterfacesInUse(items)
	if len(ifaces) != 2 || ifaces[0].Slug != "ct-image" || ifaces[1].Slug != "segmentation" {
		t.Errorf("interfaces %v, want ct-image then segmentation, each once", ifaces)
	}
	if used["ct-image"] != 2 || used["segmentation"] != 1 {
		t.Errorf("counts %v, want ct-image 2, segmentation 1", used)
	}
}
