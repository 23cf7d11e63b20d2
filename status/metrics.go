package status

import (
	"errors"
	"fmt"
	"io"
	"math"

	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Metrics holds the counters /metrics shows beside the images by state. The
// zero value is not usable; call NewMetrics. Safe for concurrent use; a nil
// *Metrics records nothing.
type Metrics struct {
	mu         sync.Mutex
	bytes      int64     // uploaded, total
	queueDepth int       // images waiting for a worker
	lastUpload time.Time // last image that reached done
	reqs       map[endpoint]*histogram
	errs       map[errorKey]int64
}

type endpoint struct{ method, path string }

type errorKey struct {
	endpoint
	code string // HTTP status code, or "network"
}

// latencyBuckets are upper bounds in seconds: API calls take milliseconds,
// part PUTs of 32 MiB on a slow line take minutes.
var latencyBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

type histogram struct {
	counts []int64 // per bucket, not cumulative; last is +Inf
	sum    float64
	n      int64
}

// NewMetrics returns empty metrics.
func NewMetrics() *Metrics {
	return &Metrics{reqs: make(map[endpoint]*histogram), errs: make(map[errorKey]int64)}
}

// AddBytesUploaded counts n more bytes accepted by the server.
func (m *Metrics) AddBytesUploaded(n int64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.bytes += n
	m.mu.Unlock()
}

// SetQueueDepth records how many images wait for a worker.
func (m *Metrics) SetQueueDepth(n int) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.queueDepth = n
	m.mu.Unlock()
}

// UploadSucceeded records the time an image reached done.
func (m *Metrics) UploadSucceeded(t time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	if t.After(m.lastUpload) {
		m.lastUpload = t
	}
	m.mu.Unlock()
}

// ObserveRequest records one HTTP request: its latency, and an error when
// it failed on the network (err != nil) or with a status of 400 or more.
func (m *Metrics) ObserveRequest(method, path string, d time.Duration, status int, err error) {
	if m == nil {
		return
	}
	ep := endpoint{method, NormalizePath(path)}
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.reqs[ep]
	if h == nil {
		h = &histogram{counts: make([]int64, len(latencyBuckets)+1)}
		m.reqs[ep] = h
	}
	s := d.Seconds()
	i := sort.SearchFloat64s(latencyBuckets, s)
	h.counts[i]++
	h.sum += s
	h.n++
	switch {
	case err != nil:
		m.errs[errorKey{ep, "network"}]++
	case status >= 400:
		m.errs[errorKey{ep, strconv.Itoa(status)}]++
	}
}

// InstrumentTransport wraps rt (nil: http.DefaultTransport) so that every
// request's latency and failure is recorded by method and normalised path,
// and the bytes of every accepted part PUT count as uploaded.
func (m *Metrics) InstrumentTransport(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	return &instrumented{rt: rt, m: m}
}

type instrumented struct {
	rt http.RoundTripper
	m  *Metrics
}

func (t *instrumented) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	if req.Method == http.MethodPut && !strings.HasPrefix(req.URL.Path, "/api/") && req.Body != nil && req.Body != http.NoBody {
		// A part PUT to storage: its bytes count as they go out, so the
		// counter moves during a long upload, not only when a part of
		// 32 MiB is done (it stayed 0 at 59 % of a 95 MiB file, whose
		// parts all ended together).
		req = req.Clone(req.Context())
		req.Body = &countingBody{ReadCloser: req.Body, m: t.m}
	}
	resp, err := t.rt.RoundTrip(req)
	status := 0
	if resp != nil {
		status = resp.StatusCode
	}
	// A cancelled request is the caller's choice, not a server failure.
	if err != nil && errors.Is(err, req.Context().Err()) {
		return resp, err
	}
	t.m.ObserveRequest(req.Method, req.URL.Path, time.Since(start), status, err)
	return resp, err
}

// countingBody counts the bytes of a request body as the transport reads them.
type countingBody struct {
	io.ReadCloser
	m *Metrics
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.m.AddBytesUploaded(int64(n))
	}
	return n, err
}

var apiWord = regexp.MustCompile(`^[a-z]+(-[a-z]+)*$`)

// NormalizePath turns a request path into a label of bounded cardinality:
// under /api/ every segment that is not a plain lower-case word (pks,
// UUIDs, S3 upload ids) becomes {pk}; any other path (presigned storage
// URLs, media redirects) is one label, "(storage)".
func NormalizePath(p string) string {
	if !strings.HasPrefix(p, "/api/") {
		return "(storage)"
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if s == "" || (apiWord.MatchString(s) && len(s) < 40) || (i == 2 && s == "v1") {
			continue
		}
		segs[i] = "{pk}"
	}
	return strings.Join(segs, "/")
}

// write prints every metric in the Prometheus text exposition format.
// counts are images by state.
func (m *Metrics) write(w io.Writer, counts map[string]int) {
	fmt.Fprintln(w, "# HELP gcingest_images Images known to the state file, by state.")
	fmt.Fprintln(w, "# TYPE gcingest_images gauge")
	seen := make(map[string]bool)
	for _, s := range States {
		fmt.Fprintf(w, "gcingest_images{state=%q} %d\n", s, counts[s])
		seen[s] = true
	}
	for _, s := range sortedKeys(counts) {
		if !seen[s] {
			fmt.Fprintf(w, "gcingest_images{state=%q} %d\n", escape(s), counts[s])
		}
	}
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	fmt.Fprintln(w, "# HELP gcingest_uploaded_bytes_total Bytes of file parts sent to storage since start, counted as they are sent.")
	fmt.Fprintln(w, "# TYPE gcingest_uploaded_bytes_total counter")
	fmt.Fprintf(w, "gcingest_uploaded_bytes_total %d\n", m.bytes)
	fmt.Fprintln(w, "# HELP gcingest_queue_depth Images waiting for an upload worker.")
	fmt.Fprintln(w, "# TYPE gcingest_queue_depth gauge")
	fmt.Fprintf(w, "gcingest_queue_depth %d\n", m.queueDepth)
	fmt.Fprintln(w, "# HELP gcingest_last_upload_success_timestamp_seconds Unix time the last image reached done; 0 before the first.")
	fmt.Fprintln(w, "# TYPE gcingest_last_upload_success_timestamp_seconds gauge")
	last := 0.0
	if !m.lastUpload.IsZero() {
		last = float64(m.lastUpload.UnixNano()) / 1e9
	}
	fmt.Fprintf(w, "gcingest_last_upload_success_timestamp_seconds %s\n", num(last))

	eps := make([]endpoint, 0, len(m.reqs))
	for ep := range m.reqs {
		eps = append(eps, ep)
	}
	sort.Slice(eps, func(i, j int) bool {
		if eps[i].path != eps[j].path {
			return eps[i].path < eps[j].path
		}
		return eps[i].method < eps[j].method
	})
	fmt.Fprintln(w, "# HELP gcingest_http_request_duration_seconds Latency of requests to Grand Challenge and its storage.")
	fmt.Fprintln(w, "# TYPE gcingest_http_request_duration_seconds histogram")
	for _, ep := range eps {
		h := m.reqs[ep]
		labels := fmt.Sprintf("method=%q,endpoint=%q", escape(ep.method), escape(ep.path))
		var cum int64
		for i, le := range latencyBuckets {
			cum += h.counts[i]
			fmt.Fprintf(w, "gcingest_http_request_duration_seconds_bucket{%s,le=%q} %d\n", labels, num(le), cum)
		}
		cum += h.counts[len(latencyBuckets)]
		fmt.Fprintf(w, "gcingest_http_request_duration_seconds_bucket{%s,le=\"+Inf\"} %d\n", labels, cum)
		fmt.Fprintf(w, "gcingest_http_request_duration_seconds_sum{%s} %s\n", labels, num(h.sum))
		fmt.Fprintf(w, "gcingest_http_request_duration_seconds_count{%s} %d\n", labels, h.n)
	}
	eks := make([]errorKey, 0, len(m.errs))
	for k := range m.errs {
		eks = append(eks, k)
	}
	sort.Slice(eks, func(i, j int) bool {
		a, b := eks[i], eks[j]
		if a.path != b.path {
			return a.path < b.path
		}
		if a.method != b.method {
			return a.method < b.method
		}
		return a.code < b.code
	})
	fmt.Fprintln(w, "# HELP gcingest_http_request_errors_total Failed requests: HTTP status 400 and above, or network errors.")
	fmt.Fprintln(w, "# TYPE gcingest_http_request_errors_total counter")
	for _, k := range eks {
		fmt.Fprintf(w, "gcingest_http_request_errors_total{method=%q,endpoint=%q,code=%q} %d\n",
			escape(k.method), escape(k.path), k.code, m.errs[k])
	}
}

// escape keeps a label value valid; %q already escapes quotes and
// backslashes, so only Go-specific escapes need care. Label values here are
// methods, normalised paths and state names: plain ASCII.
func escape(s string) string { return strings.ToValidUTF8(s, "?") }

func num(f float64) string {
	if math.IsInf(f, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// writeUnknown writes the files of unknown type by watch.
func writeUnknown(w io.Writer, unknown map[string]int) {
	fmt.Fprintln(w, "# HELP gcingest_unknown_files Files in a watched folder of no type the server imports, left where they are.")
	fmt.Fprintln(w, "# TYPE gcingest_unknown_files gauge")
	for _, k := range sortedKeys(unknown) {
		fmt.Fprintf(w, "gcingest_unknown_files{watch=%q} %d\n", escape(k), unknown[k])
	}
}
