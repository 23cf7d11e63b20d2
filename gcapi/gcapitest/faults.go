package gcapitest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Faults are injected into requests; change them at any time with
// SetFaults. Which request gets which fault is drawn from a source seeded
// by Options.Seed, so the same requests in the same order get the same
// faults. Each request that the faults apply to draws once; the rates are
// shares of those requests and should add up to at most 1.
type Faults struct {
	Rate5xx    float64       // share answered 502/503/504 before acting
	Rate500    float64       // share answered 500 after acting (the ambiguous case: e.g. item created, response lost)
	Rate429    float64       // share answered 429 with Retry-After before acting
	RetryAfter time.Duration // Retry-After of 429 answers; default 1s
	RateReset  float64       // share that act, then get their connection closed mid-response
	RateStall  float64       // share that stall for Stall before being served normally
	Stall      time.Duration
	PathPrefix string // only requests whose path starts with this ("" = all, incl. part PUTs and media)
	// RateS3RequestTimeout and RateS3ExpiredToken are shares of part PUTs
	// that S3 refuses with 400 and an XML <Code> of RequestTimeout (the
	// body came too slowly) or ExpiredToken (the presigning credentials
	// expired); nothing is stored. They draw with the rates above, from
	// part PUTs only.
	RateS3RequestTimeout float64
	RateS3ExpiredToken   float64
	// FailImport, when set, is asked before an import (image build or file
	// copy) with the uploads' file names; a non-empty answer fails the
	// import with that error_message.
	FailImport func(filenames []string) string
	// FailLinkedCheck, when set, is asked after an image build succeeded
	// (its uploads already deleted) with the uploads' file names; a
	// non-empty answer is the validation error of the linked task
	// add_image_to_object (a segmentation's voxel values, say), which
	// turns the Succeeded session Failed with an empty user_uploads list
	// (grand-challenge.org app/grandchallenge/components/tasks.py).
	FailLinkedCheck func(filenames []string) string
}

// SetFaults replaces the fault configuration.
func (s *Server) SetFaults(f Faults) {
	s.rmu.Lock()
	s.faults = f
	s.rmu.Unlock()
}

type faultKind int

const (
	faultNone faultKind = iota
	fault5xx
	fault429
	faultReset
	fault500
	faultStall
	faultS3Timeout
	faultS3Expired
)

func (k faultKind) String() string {
	return [...]string{"", "5xx", "429", "reset", "500", "stall", "s3-timeout", "s3-expired"}[k]
}

type faultDraw struct {
	kind       faultKind
	status     int
	retryAfter time.Duration
	stall      time.Duration
}

func (s *Server) drawFault(method, path string) faultDraw {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	f := s.faults
	total := f.Rate5xx + f.Rate429 + f.RateReset + f.Rate500 + f.RateStall
	base := total
	if method == http.MethodPut && strings.HasPrefix(path, "/s3/") {
		total += f.RateS3RequestTimeout + f.RateS3ExpiredToken
	}
	if total <= 0 || (f.PathPrefix != "" && !strings.HasPrefix(path, f.PathPrefix)) {
		return faultDraw{}
	}
	x := s.faultRand.Float64()
	switch {
	case x < f.Rate5xx:
		return faultDraw{kind: fault5xx, status: []int{502, 503, 504}[s.faultRand.IntN(3)]}
	case x < f.Rate5xx+f.Rate429:
		ra := f.RetryAfter
		if ra <= 0 {
			ra = time.Second
		}
		return faultDraw{kind: fault429, status: 429, retryAfter: ra}
	case x < f.Rate5xx+f.Rate429+f.RateReset:
		return faultDraw{kind: faultReset}
	case x < f.Rate5xx+f.Rate429+f.RateReset+f.Rate500:
		return faultDraw{kind: fault500, status: 500}
	case x < base:
		return faultDraw{kind: faultStall, stall: f.Stall}
	case total == base:
		// Not a part PUT: S3's answers do not apply.
	case x < base+f.RateS3RequestTimeout:
		return faultDraw{kind: faultS3Timeout, status: 400}
	case x < total:
		return faultDraw{kind: faultS3Expired, status: 400}
	}
	return faultDraw{}
}

// Request is one request the server saw.
type Request struct {
	Method        string
	Path          string
	Query         string // raw query, including signatures
	Authorization string // the Authorization header as sent
	Status        int    // 0 when the connection was reset by a fault
	BodyBytes     int64  // request body bytes read
	Fault         string // "", "5xx", "429", "reset", "500" or "stall"
	Time          time.Time
}

// Stats counts requests by kind.
type Stats struct {
	Requests        int64
	Creates         int64 // POST /uploads/ + POST /archives/items/ + PATCH/PUT /archives/items/{pk}/
	UploadCreates   int64
	ItemCreates     int64
	ItemUpdates     int64
	PresignRequests int64
	Completes       int64
	Aborts          int64
	ListParts       int64
	PartPUTs        int64
	PartBytes       int64 // body bytes of part PUTs
	Downloads       int64 // GETs of /media/ and /s3media/ URLs
	Faults          int64 // requests a fault was applied to
	// TokenLeaks counts requests to presigned part URLs or redirect
	// targets (/s3/, /s3media/) that carried an Authorization header.
	TokenLeaks int64
}

// Requests returns every request seen so far, in the order they finished.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// Stats returns the request counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

type countingBody struct {
	io.ReadCloser
	n int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = 200
	}
	return w.ResponseWriter.Write(b)
}

// capWriter captures a response the client will not get in full: status,
// headers and the first bytes of the body.
type capWriter struct {
	h      http.Header
	status int
	body   bytes.Buffer // the first 4 KiB of the body
	n      int64        // the whole body's length
}

func (w *capWriter) Header() http.Header { return w.h }
func (w *capWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *capWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = 200
	}
	w.n += int64(len(b))
	if room := 4096 - w.body.Len(); room > 0 {
		w.body.Write(b[:min(room, len(b))])
	}
	return len(b), nil
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := s.Now()
	cb := &countingBody{ReadCloser: r.Body}
	r.Body = cb
	sw := &statusWriter{ResponseWriter: w}
	fd := s.drawFault(r.Method, r.URL.Path)
	status := 0
	switch fd.kind {
	case faultS3Timeout:
		// S3's answers to a part PUT it gave up on
		// (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html).
		io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		s3Error(sw, 400, "RequestTimeout", "Your socket connection to the server was not read from or written to within the timeout period.")
		status = 400
	case faultS3Expired:
		s3Error(sw, 400, "ExpiredToken", "The provided token has expired.")
		status = 400
	case fault5xx:
		sw.Header().Set("Content-Type", "text/html")
		sw.WriteHeader(fd.status)
		fmt.Fprintf(sw, "<html><body><h1>%d %s</h1></body></html>\n", fd.status, http.StatusText(fd.status))
		status = fd.status
	case fault429:
		secs := int((fd.retryAfter + time.Second - 1) / time.Second)
		sw.Header().Set("Retry-After", fmt.Sprint(secs))
		writeJSON(sw, 429, map[string]any{"detail": fmt.Sprintf("Request was throttled. Expected available in %d seconds.", secs)})
		status = 429
	case fault500:
		cw := &capWriter{h: http.Header{}}
		s.route(cw, r)
		sw.Header().Set("Content-Type", "text/html")
		sw.WriteHeader(500)
		io.WriteString(sw, "<h1>Server Error (500)</h1>")
		status = 500
	case faultReset:
		cw := &capWriter{h: http.Header{}}
		s.route(cw, r)
		s.reset(w, cw)
	case faultStall:
		t := time.NewTimer(fd.stall)
		s.stalling.Add(1)
		select {
		case <-t.C:
		case <-r.Context().Done():
		case <-s.closing:
		}
		t.Stop()
		s.stalling.Add(-1)
		fallthrough
	default:
		s.route(sw, r)
		status = sw.status
	}
	s.record(r, Request{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		Authorization: r.Header.Get("Authorization"), Status: status,
		BodyBytes: cb.n, Fault: fd.kind.String(), Time: start,
	})
}

// reset writes the start of the captured response and closes the
// connection, as a proxy or a network failure would.
func (s *Server) reset(w http.ResponseWriter, cw *capWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler) // HTTP/2: abort the stream instead
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	var full bytes.Buffer
	code := cw.status
	if code == 0 {
		code = 200
	}
	fmt.Fprintf(&full, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
	// The handler may have set its own Content-Length: announce the whole
	// body's length once, so the client sees a cut body, not a bad header.
	cw.h.Del("Content-Length")
	cw.h.Write(&full)
	fmt.Fprintf(&full, "Content-Length: %d\r\n\r\n", cw.n)
	full.Write(cw.body.Bytes())
	b := full.Bytes()
	// Cut somewhere in the headers or in the body, never at the very end.
	cut := len(b) / 2
	if cut < 1 {
		cut = 1
	}
	bw := bufio.NewWriter(conn)
	bw.Write(b[:cut])
	bw.Flush()
	buf.Flush()
}

func (s *Server) record(r *http.Request, rec Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, rec)
	st := &s.stats
	st.Requests++
	if rec.Fault != "" {
		st.Faults++
	}
	p := rec.Path
	switch {
	case strings.HasPrefix(p, "/s3/"):
		if rec.Authorization != "" {
			st.TokenLeaks++
		}
		if rec.Method == http.MethodPut {
			st.PartPUTs++
			st.PartBytes += rec.BodyBytes
		}
		return
	case strings.HasPrefix(p, "/s3media/"):
		if rec.Authorization != "" {
			st.TokenLeaks++
		}
		st.Downloads++
		return
	case strings.HasPrefix(p, "/media/"):
		st.Downloads++
		return
	}
	seg := apiSegments(p)
	switch {
	case len(seg) == 1 && seg[0] == "uploads" && rec.Method == http.MethodPost:
		st.UploadCreates++
		st.Creates++
	case len(seg) == 2 && seg[0] == "archives" && seg[1] == "items" && rec.Method == http.MethodPost:
		st.ItemCreates++
		st.Creates++
	case len(seg) == 3 && seg[0] == "archives" && seg[1] == "items" && (rec.Method == http.MethodPatch || rec.Method == http.MethodPut):
		st.ItemUpdates++
		st.Creates++
	case len(seg) == 4 && seg[0] == "uploads":
		switch seg[3] {
		case "generate-presigned-urls":
			st.PresignRequests++
		case "complete-multipart-upload":
			st.Completes++
		case "abort-multipart-upload":
			st.Aborts++
		case "list-parts":
			st.ListParts++
		}
	}
}

// apiSegments splits "/api/v1/a/b/" into [a b]; nil for other paths.
func apiSegments(p string) []string {
	rest, ok := strings.CutPrefix(p, "/api/v1/")
	if !ok {
		return nil
	}
	rest = strings.TrimSuffix(rest, "/")
	if rest == "" {
		return []string{}
	}
	return strings.Split(rest, "/")
}
