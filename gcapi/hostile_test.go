package gcapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// These tests play a broken or hostile server (or something in front of
// it): the client must fail fast, bounded and with a clear error, never
// buffer without limit or wait for ever.

// returnsWithin runs f and fails the test if it has not returned by the
// deadline: a hang detector, not a speed claim.
func returnsWithin(t *testing.T, d time.Duration, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("still waiting after %s", d)
		return nil
	}
}

func TestAnswerTooLarge(t *testing.T) {
	t.Run("declared length", func(t *testing.T) {
		var sent atomic.Int64
		rc := &recorder{answer: func(n int, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", fmt.Sprint(int64(2)<<30))
			m, _ := io.WriteString(w, `{"pk":"`)
			sent.Add(int64(m))
			chunk := bytes.Repeat([]byte("a"), 64<<10)
			for {
				m, err := w.Write(chunk)
				sent.Add(int64(m))
				if err != nil {
					return
				}
			}
		}}
		c, _ := newTestClient(t, rc)
		err := returnsWithin(t, 20*time.Second, func() error { _, err := c.ArchiveItem(context.Background(), "i1"); return err })
		if err == nil || !strings.Contains(err.Error(), "/api/v1/archives/items/i1/") || !strings.Contains(err.Error(), "larger than") {
			t.Fatalf("err = %v; want an answer-too-large error naming the URL", err)
		}
		if rc.count() != 1 {
			t.Errorf("%d requests, want 1: a too large answer is not retried", rc.count())
		}
	})
	t.Run("endless chunked", func(t *testing.T) {
		var sent atomic.Int64
		rc := &recorder{answer: func(n int, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"pk":"`)
			chunk := bytes.Repeat([]byte("a"), 64<<10)
			for sent.Load() < int64(2)<<30 {
				m, err := w.Write(chunk)
				sent.Add(int64(m))
				if err != nil {
					return
				}
			}
		}}
		c, _ := newTestClient(t, rc)
		err := returnsWithin(t, 60*time.Second, func() error { _, err := c.ArchiveItem(context.Background(), "i1"); return err })
		if err == nil || !strings.Contains(err.Error(), "/api/v1/archives/items/i1/") || !strings.Contains(err.Error(), "larger than") {
			t.Fatalf("err = %v; want an answer-too-large error naming the URL", err)
		}
		if IsTransient(err) {
			t.Errorf("IsTransient(%v) = true; asking again gets the same answer", err)
		}
		// What the server managed to write before the client hung up: the
		// cap, the drain and the socket buffers, not the 2 GiB offered.
		if got := sent.Load(); got > 2*maxAnswer {
			t.Errorf("server sent %d MiB before the client gave up, want at most %d MiB", got>>20, 2*maxAnswer>>20)
		}
	})
}

func TestTricklingAnswerIsCut(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	rc := &recorder{answer: func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"pk":"i1","title":"`)
		w.(http.Flusher).Flush()
		// One byte every 20ms: always moving, never arriving.
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				if _, err := io.WriteString(w, "a"); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			case <-stop:
				return
			}
		}
	}}
	c, _ := newTestClient(t, rc, WithStallTimeout(300*time.Millisecond),
		WithRetry(RetryPolicy{MaxAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}))
	err := returnsWithin(t, 20*time.Second, func() error { _, err := c.ArchiveItem(context.Background(), "i1"); return err })
	if err == nil || !IsTransient(err) {
		t.Fatalf("err = %v; want a transient stall error", err)
	}
	if rc.count() != 2 {
		t.Errorf("%d requests, want 2 (a stalled read is retried, within MaxAttempts)", rc.count())
	}
}

func TestPaginationBoundedByFirstPage(t *testing.T) {
	t.Run("huge count, short pages", func(t *testing.T) {
		rc := &recorder{}
		rc.answer = func(n int, w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `{"count":86000,"next":"x","previous":null,"results":[{"pk":"it%d","title":"t"}]}`, n)
		}
		c, _ := newTestClient(t, rc)
		var got []ArchiveItem
		err := returnsWithin(t, 20*time.Second, func() error {
			var err error
			got, err = c.ArchiveItems(context.Background(), "a1")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if n := rc.count(); n > maxWalks {
			t.Errorf("%d requests for a list whose pages stop short, want at most %d", n, maxWalks)
		}
		if len(got) == 0 {
			t.Error("no items: the rows the server did send are lost")
		}
	})
	t.Run("full pages beyond the first count", func(t *testing.T) {
		rc := &recorder{}
		rc.answer = func(n int, w http.ResponseWriter, r *http.Request) {
			var res []string
			for i := range pageLimit {
				res = append(res, fmt.Sprintf(`{"pk":"it%d-%d","title":"t"}`, n, i))
			}
			// The count grows with every page: a list without end.
			fmt.Fprintf(w, `{"count":%d,"next":"x","previous":null,"results":[%s]}`, 250+n*pageLimit, strings.Join(res, ","))
		}
		c, _ := newTestClient(t, rc)
		err := returnsWithin(t, 20*time.Second, func() error { _, err := c.ArchiveItems(context.Background(), "a1"); return err })
		if err != nil {
			t.Fatal(err)
		}
		// The first page promised 250 rows: 3 pages, and one more, per walk.
		if n, max := rc.count(), maxWalks*4; n > max {
			t.Errorf("%d requests, want at most %d", n, max)
		}
	})
	t.Run("absurd count", func(t *testing.T) {
		rc := &recorder{answer: func(n int, w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, `{"count":9000000000,"next":"x","previous":null,"results":[{"pk":"a","title":"t"}]}`)
		}}
		c, _ := newTestClient(t, rc)
		_, err := c.ArchiveItems(context.Background(), "a1")
		if err == nil || !strings.Contains(err.Error(), "archives/items/") {
			t.Fatalf("err = %v; want a refusal naming the list", err)
		}
	})
}

func TestUploadCreateNotRepeatedWhenAmbiguous(t *testing.T) {
	okUpload := `{"pk":"u1","filename":"ct.mha","status":"Initialized","s3_upload_id":"s3id","api_url":"x"}`
	answer := func(code int) func(w http.ResponseWriter, r *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(code)
			fmt.Fprintf(w, "<h1>%d</h1>", code)
		}
	}
	tests := []struct {
		name      string
		first     func(w http.ResponseWriter, r *http.Request)
		requests  int
		ambiguous bool
		transient bool
	}{
		{"503 after acting", answer(503), 1, true, true},
		{"502", answer(502), 1, true, true},
		{"504", answer(504), 1, true, true},
		{"500", answer(500), 1, true, false},
		{"reset after sending", nil, 1, true, true},
		{"429 is retried", answer(429), 2, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var created atomic.Int32
			rc := &recorder{}
			rc.answer = func(n int, w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost || r.URL.Path != "/api/v1/uploads/" {
					t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
				}
				created.Add(1) // the server acts on every POST
				if n > 0 {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(201)
					fmt.Fprint(w, okUpload)
					return
				}
				if tt.first == nil {
					reset(t, w)
					return
				}
				tt.first(w, r)
			}
			c, _ := newTestClient(t, rc)
			_, err := c.CreateUpload(context.Background(), "ct.mha")
			if rc.count() != tt.requests {
				t.Errorf("%d POSTs, want %d (%d uploads now exist on the server)", rc.count(), tt.requests, created.Load())
			}
			if tt.requests == 2 {
				if err != nil {
					t.Fatalf("err = %v, want the retried create to succeed", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			if got := errors.Is(err, ErrAmbiguous); got != tt.ambiguous {
				t.Errorf("errors.Is(%v, ErrAmbiguous) = %v, want %v", err, got, tt.ambiguous)
			}
			if got := IsTransient(err); got != tt.transient {
				t.Errorf("IsTransient(%v) = %v, want %v", err, got, tt.transient)
			}
			if IsPermanent(err) {
				t.Errorf("IsPermanent(%v) = true; the upload may exist", err)
			}
		})
	}
	t.Run("a GET 503 is retried and not ambiguous", func(t *testing.T) {
		rc := &recorder{answer: func(n int, w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(503)
		}}
		c, _ := newTestClient(t, rc, WithRetry(RetryPolicy{MaxAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}))
		_, err := c.Upload(context.Background(), "u1")
		if errors.Is(err, ErrAmbiguous) || rc.count() != 2 {
			t.Errorf("%d requests, err %v; want 2 requests and an error that is not ErrAmbiguous", rc.count(), err)
		}
	})
}

func TestRefusalKinds(t *testing.T) {
	tests := []struct {
		name         string
		status       int
		ctype, body  string
		server       string
		proxy        bool // *ProxyError naming server
		transient    bool
		unauthorized bool
	}{
		{"403 HTML from a firewall", 403, "text/html", "<html><body>Access denied by policy</body></html>", "FortiWeb", true, true, false},
		{"403 HTML without Server header", 403, "text/html; charset=utf-8", "<h1>Forbidden</h1>", "", true, true, false},
		{"403 from the API", 403, "application/json", `{"detail":"You do not have permission to perform this action."}`, "nginx", false, false, false},
		{"403 upload limit", 403, "application/json", `{"detail":"Upload limit reached"}`, "", false, false, false},
		{"401 invalid token", 401, "application/json", `{"detail":"Invalid token."}`, "", false, false, true},
		{"401 HTML", 401, "text/html", `<h1>401</h1>`, "", false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := &recorder{answer: func(n int, w http.ResponseWriter, r *http.Request) {
				if tt.server != "" {
					w.Header().Set("Server", tt.server)
				}
				w.Header().Set("Content-Type", tt.ctype)
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}}
			c, srv := newTestClient(t, rc, WithRetry(RetryPolicy{MaxAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}))
			_, err := c.ArchiveItem(context.Background(), "i1")
			if err == nil {
				t.Fatal("no error")
			}
			var pe *ProxyError
			if got := errors.As(err, &pe); got != tt.proxy {
				t.Fatalf("errors.As(%v, *ProxyError) = %v, want %v", err, got, tt.proxy)
			}
			if tt.proxy {
				want := tt.server
				if want == "" {
					want = strings.TrimPrefix(srv.URL, "http://")
				}
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
				var e *Error
				if errors.As(err, &e) {
					t.Errorf("a proxy's refusal is also an *Error (status %d): callers would take it for the API's", e.StatusCode)
				}
			}
			if got := IsTransient(err); got != tt.transient {
				t.Errorf("IsTransient(%v) = %v, want %v", err, got, tt.transient)
			}
			if got := IsPermanent(err); got == tt.transient {
				t.Errorf("IsPermanent(%v) = %v, want %v", err, got, !tt.transient)
			}
			if got := errors.Is(err, ErrUnauthorized); got != tt.unauthorized {
				t.Errorf("errors.Is(%v, ErrUnauthorized) = %v, want %v", err, got, tt.unauthorized)
			}
		})
	}
}

func TestErrorsHideSecrets(t *testing.T) {
	const secret = "s3cr3t-TOKEN-value"
	check := func(t *testing.T, what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: no error", what)
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(fmt.Sprintf("%+v", err), secret) {
			t.Errorf("%s: error shows the secret: %v", what, err)
		}
	}
	t.Run("base URL with user info", func(t *testing.T) {
		for _, u := range []string{
			"https://user:" + secret + "@gc.example",
			"https://" + secret + "@gc.example/",
			"https://user:" + secret + "@gc example/",
			"ftp://user:" + secret + "@gc.example/",
			"http://user:" + secret + "@gc.example/",
		} {
			_, err := New(u, "tok")
			check(t, "New", err)
		}
	})
	t.Run("server echoing the token", func(t *testing.T) {
		rc := &recorder{answer: func(n int, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(400)
			fmt.Fprintf(w, `{"detail":"bad header %s"}`, r.Header.Get("Authorization"))
		}}
		srv := httptest.NewServer(rc)
		t.Cleanup(srv.Close)
		c, err := New(srv.URL, secret)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.ArchiveItem(context.Background(), "i1")
		check(t, "ArchiveItem", err)
		var e *Error
		if errors.As(err, &e) && bytes.Contains(e.Body, []byte(secret)) {
			t.Error("Error.Body holds the token")
		}
	})
	t.Run("media view echoing the token", func(t *testing.T) {
		rc := &recorder{answer: func(n int, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(404)
			fmt.Fprintf(w, "no file for %s", r.Header.Get("Authorization"))
		}}
		srv := httptest.NewServer(rc)
		t.Cleanup(srv.Close)
		c, err := New(srv.URL, secret)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Download(context.Background(), srv.URL+"/media/images/i1/ct.mha", io.Discard)
		check(t, "Download", err)
	})
	t.Run("redirect target that fails", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := l.Addr().String()
		l.Close()
		rc := &recorder{answer: func(n int, w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://"+dead+"/signed/ct.mha?X-Amz-Signature="+secret, http.StatusFound)
		}}
		c, srv := newTestClient(t, rc, WithRetry(RetryPolicy{MaxAttempts: 1}))
		_, err = c.Download(context.Background(), srv.URL+"/media/images/i1/ct.mha", io.Discard)
		check(t, "Download", err)
	})
}
