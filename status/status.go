// Package status serves what a running agent is doing on a loopback-only
// HTTP listener: /healthz, /status (JSON) and /metrics (Prometheus text
// format), and reads it back for `gcingest status` and `gcingest retry`.
package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/gcingest/gcingest/printable"
)

// Image states as the pipeline records them (docs/ARCHITECTURE.md, "States of an item").
const (
	StatePending   = "pending"
	StateUploading = "uploading"
	StateUploaded  = "uploaded"
	StateAttaching = "attaching"
	StateImporting = "importing"
	StateDone      = "done"
	StateFinished  = "finished"
	StateRetrying  = "retrying"
	StateFailed    = "failed"
	StateDuplicate = "duplicate"
	// StateSuperseded is a failed image whose folder or file a newer image
	// landed: no longer counted as failed.
	StateSuperseded = "superseded"
	// StateDismissed is a failed image the operator dismissed (gcingest
	// forget): no longer counted as failed.
	StateDismissed = "dismissed"
)

// States lists every state in pipeline order, for stable output.
var States = []string{StatePending, StateUploading, StateUploaded, StateAttaching,
	StateImporting, StateDone, StateFinished, StateRetrying, StateFailed, StateDuplicate, StateSuperseded, StateDismissed}

// Image is one image as /status shows it.
type Image struct {
	ID          string    `json:"id"`
	Watch       string    `json:"watch"`
	Key         string    `json:"key"`
	Title       string    `json:"title,omitempty"`
	State       string    `json:"state"`
	Files       []string  `json:"files"`
	BytesSent   int64     `json:"bytes_sent"`
	BytesTotal  int64     `json:"bytes_total"`
	ItemPK      string    `json:"item_pk,omitempty"`
	ImagePK     string    `json:"image_pk,omitempty"`
	Attempts    int       `json:"attempts"`
	LastError   string    `json:"last_error,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	Updated     time.Time `json:"updated,omitzero"`
	// WaitingFor says what a waiting image waits for, and Until when the
	// agent stops waiting and looks at the server's truth again.
	WaitingFor string    `json:"waiting_for,omitempty"`
	Until      time.Time `json:"until,omitzero"`
	// Hashing says BytesSent counts what the agent has read of the files
	// to hash them, before anything is sent (a big file takes minutes).
	Hashing bool `json:"hashing,omitempty"`
	// EmptyItem says the image failed leaving its archive item (ItemPK)
	// with no value; the API cannot delete it.
	EmptyItem bool `json:"empty_item,omitempty"`
	// Detail is set for a query of one image (Query.ID): its whole story.
	Detail *Detail `json:"detail,omitempty"`
}

// Detail is one image's whole story: where its files are, what was sent,
// the item, and every error with its time.
type Detail struct {
	Kind      string         `json:"kind,omitempty"`
	Files     []DetailFile   `json:"files"`
	Uploads   []DetailUpload `json:"uploads,omitempty"`
	Values    []DetailValue  `json:"values,omitempty"`
	SessionPK string         `json:"session_pk,omitempty"`
	ImageURL  string         `json:"image_url,omitempty"`
	MovedTo   string         `json:"moved_to,omitempty"`
	Created   time.Time      `json:"created,omitzero"`
	Finished  time.Time      `json:"finished,omitzero"`
	Errors    []ErrorNote    `json:"errors,omitempty"`
}

// DetailFile is one file of an image.
type DetailFile struct {
	Rel  string `json:"rel"`
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// DetailUpload is one upload of an image.
type DetailUpload struct {
	Filename  string `json:"filename"`
	Size      int64  `json:"size"`
	Sent      int64  `json:"sent"`
	PK        string `json:"pk,omitempty"`
	Completed bool   `json:"completed,omitempty"`
}

// DetailValue is one value of the image's item.
type DetailValue struct {
	Interface string   `json:"interface"`
	Kind      string   `json:"kind"`
	Files     []string `json:"files,omitempty"`
	Confirmed bool     `json:"confirmed,omitempty"`
}

// ErrorNote is one error, when it happened and in which state.
type ErrorNote struct {
	At    time.Time `json:"at"`
	State string    `json:"state"`
	Msg   string    `json:"msg"`
}

// Query selects the images of a report. The zero Query asks for the
// unfinished ones (UnfinishedStates).
type Query struct {
	All    bool     // every image
	States []string // only these states
	ID     string   // one image, with its Detail
}

// UnfinishedStates are the states `gcingest status` lists by default: every
// image that is not finished or a duplicate, failed ones included (they wait
// for the operator).
var UnfinishedStates = []string{StatePending, StateUploading, StateUploaded, StateAttaching,
	StateImporting, StateDone, StateRetrying, StateFailed}

// Selected returns the states the query lists; nil means every state.
func (q Query) Selected() []string {
	switch {
	case q.All || q.ID != "":
		return nil
	case len(q.States) > 0:
		return q.States
	}
	return UnfinishedStates
}

// Values encodes the query for the /status URL.
func (q Query) Values() url.Values {
	v := url.Values{}
	if q.All {
		v.Set("all", "1")
	}
	if len(q.States) > 0 {
		v.Set("state", strings.Join(q.States, ","))
	}
	if q.ID != "" {
		v.Set("id", q.ID)
	}
	return v
}

// ParseQuery decodes a /status URL's query; an unknown state is an error.
func ParseQuery(v url.Values) (Query, error) {
	q := Query{All: v.Get("all") == "1", ID: v.Get("id")}
	if s := v.Get("state"); s != "" {
		for _, st := range strings.Split(s, ",") {
			if !slices.Contains(States, st) {
				return Query{}, fmt.Errorf("unknown state %q; the states are %s", st, strings.Join(States, ", "))
			}
			q.States = append(q.States, st)
		}
	}
	return q, nil
}

// Report is the /status document.
type Report struct {
	Version string         `json:"version"`
	Started time.Time      `json:"started,omitzero"` // zero when read from the state file
	Images  []Image        `json:"images"`           // those the query selected
	Counts  map[string]int `json:"counts"`           // every image recorded, by state
	// Query is what Images were selected by; Counts cover every image.
	Query Query `json:"query,omitzero"`
	// Unknown counts the files of no type the server imports, seen in the
	// watched folders and left there (by watch path).
	Unknown map[string]int `json:"unknown_files,omitempty"`
	// EmptyItems counts the archive items that failed images left with no
	// value (of every image, not only those selected).
	EmptyItems int `json:"empty_items,omitempty"`
	// DICOM lists the running agent's DICOM listeners ([[dicom]] tables);
	// empty when read from the state file.
	DICOM []Listener `json:"dicom,omitempty"`
}

// CountStates fills Counts from Images.
func (r *Report) CountStates() {
	r.Counts = make(map[string]int)
	for _, im := range r.Images {
		r.Counts[im.State]++
	}
}

// Source gives the current report; the agent implements it.
type Source interface {
	Report(ctx context.Context, q Query) (*Report, error)
}

// Counter gives the number of images by state (and of files of unknown
// type, by watch) without reading every record. A Source that implements it
// serves /metrics from it; otherwise /metrics asks for a report.
type Counter interface {
	Counts(ctx context.Context) (states, unknown map[string]int, err error)
}

// Retrier sends images through the pipeline again: those with the given
// ids, or every failed one when failed is true. It returns the ids it
// queued. A Source that also implements Retrier gets POST /retry.
type Retrier interface {
	Retry(ctx context.Context, ids []string, failed bool) ([]string, error)
}

// Forgetter dismisses failed images for good (gcingest forget): they leave
// the failed count and keep their story. It returns the ids it dismissed;
// an id it refuses (not failed) is in the error, named with its state. A
// Source that also implements Forgetter gets POST /forget.
type Forgetter interface {
	Forget(ctx context.Context, ids []string) ([]string, error)
}

// ForgetRequest is the body of POST /forget.
type ForgetRequest struct {
	IDs []string `json:"ids"`
}

// ForgetResponse is the answer of POST /forget: the ids dismissed, and
// why the others were not, one line each (a record not failed, a state
// file that could not be written).
type ForgetResponse struct {
	Forgotten []string `json:"forgotten"`
	Error     string   `json:"error,omitempty"`
}

// RetryRequest is the body of POST /retry.
type RetryRequest struct {
	IDs    []string `json:"ids,omitempty"`
	Failed bool     `json:"failed,omitempty"`
}

// RetryResponse is the answer of POST /retry.
type RetryResponse struct {
	Queued []string `json:"queued"`
}

// ErrNotLoopback is returned for a listen address that is not loopback.
var ErrNotLoopback = errors.New("not a loopback address")

// Listen opens the status listener. It refuses an address that is not
// loopback (the status shows file names, which may hold patient data) and
// says clearly when the port is taken.
func Listen(listen string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("status listener %q: %w", listen, err)
	}
	if !isLoopback(host) {
		return nil, fmt.Errorf("status listener %s: %w; use 127.0.0.1 or [::1]", listen, ErrNotLoopback)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("status listener %s: port already in use (another gcingest running? set [status] listen to a free port): %w", listen, err)
		}
		return nil, fmt.Errorf("status listener %s: %w", listen, err)
	}
	return ln, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ServeListener serves on ln (closed on return) until ctx is done.
func ServeListener(ctx context.Context, ln net.Listener, src Source, metrics *Metrics, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           Handler(src, metrics, log),
		ReadHeaderTimeout: 5 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("status listener up", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("status listener %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}

// Handler serves /healthz, /status, /metrics and, when src is a Retrier
// or a Forgetter, POST /retry or POST /forget. metrics may be nil.
//
// Listening on loopback alone does not keep web pages out: a page the
// operator opens can make the browser send requests to 127.0.0.1, and with
// DNS rebinding read the answers under its own host name. So every request
// must name a loopback host (Host header), and POST /retry must carry a
// JSON body (a cross-site form or a text/plain fetch cannot, without a
// CORS preflight that this server never grants) and no cross-site Origin;
// so must POST /forget.
func Handler(src Source, metrics *Metrics, log *slog.Logger) http.Handler {
	return guard(mux(src, metrics, log), log)
}

// guard refuses requests that a browser sends on a web page's behalf.
func guard(next http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !loopbackHost(r.Host) {
			log.Warn("status listener: refused a request for a host that is not loopback (DNS rebinding?)", "host", r.Host, "path", r.URL.Path)
			http.Error(w, "status: the Host header must name a loopback address", http.StatusMisdirectedRequest)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if msg := crossSite(r); msg != "" {
				log.Warn("status listener: refused a cross-site request", "path", r.URL.Path, "why", msg)
				http.Error(w, "status: "+msg, http.StatusForbidden)
				return
			}
			mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if err != nil || mt != "application/json" {
				http.Error(w, "status: send the request body as application/json", http.StatusUnsupportedMediaType)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// loopbackHost reports whether a Host header ("127.0.0.1:9187",
// "localhost", "[::1]:9187") names a loopback name or address.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	return host != "" && isLoopback(host)
}

// crossSite says why a state-changing request comes from another site, or
// "" when it does not: an Origin other than this listener's own, or a
// browser's Sec-Fetch-Site saying so.
func crossSite(r *http.Request) string {
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host || !loopbackHost(u.Host) {
			return fmt.Sprintf("requests from origin %q are not accepted", o)
		}
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return "cross-site requests are not accepted"
	}
	return ""
}

func mux(src Source, metrics *Metrics, log *slog.Logger) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		q, err := ParseQuery(r.URL.Query())
		if err != nil {
			http.Error(w, "status: "+err.Error(), http.StatusBadRequest)
			return
		}
		rep, err := src.Report(r.Context(), q)
		if err != nil {
			log.Warn("status report", "err", err)
			http.Error(w, "status: "+printable.Error(err).Error(), http.StatusInternalServerError)
			return
		}
		if rep.Counts == nil {
			rep.CountStates()
		}
		writeJSON(w, rep)
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		var counts, unknown map[string]int
		var err error
		if c, ok := src.(Counter); ok {
			counts, unknown, err = c.Counts(r.Context())
		} else {
			var rep *Report
			if rep, err = src.Report(r.Context(), Query{All: true}); err == nil {
				if rep.Counts == nil {
					rep.CountStates()
				}
				counts, unknown = rep.Counts, rep.Unknown
			}
		}
		if err != nil {
			http.Error(w, "metrics: "+printable.Error(err).Error(), http.StatusInternalServerError)
			return
		}
		var buf bytes.Buffer
		metrics.write(&buf, counts)
		writeUnknown(&buf, unknown)
		if d, ok := src.(DICOMSource); ok {
			writeDICOMMetrics(&buf, d.DICOMListeners())
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Write(buf.Bytes())
	})
	mux.HandleFunc("POST /retry", func(w http.ResponseWriter, r *http.Request) {
		rt, ok := src.(Retrier)
		if !ok {
			http.Error(w, "retry is not supported by this agent", http.StatusNotImplemented)
			return
		}
		var req RetryRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, "retry: bad request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		queued, err := rt.Retry(r.Context(), req.IDs, req.Failed)
		if err != nil {
			// The errors quote file names; each of several stays on its
			// own line (printable.Error), which the client keeps.
			http.Error(w, "retry: "+printable.Error(err).Error(), http.StatusBadRequest)
			return
		}
		log.Info("retry requested", "ids", len(req.IDs), "failed", req.Failed, "queued", len(queued))
		writeJSON(w, RetryResponse{Queued: queued})
	})
	mux.HandleFunc("POST /forget", func(w http.ResponseWriter, r *http.Request) {
		fg, ok := src.(Forgetter)
		if !ok {
			http.Error(w, "forget is not supported by this agent", http.StatusNotImplemented)
			return
		}
		var req ForgetRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, "forget: bad request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		// Some may be dismissed and others refused: the answer says both,
		// the refusals each on its own line (printable.Error: they quote
		// what the records hold).
		resp := ForgetResponse{Forgotten: []string{}}
		forgotten, err := fg.Forget(r.Context(), req.IDs)
		resp.Forgotten = append(resp.Forgotten, forgotten...)
		if err != nil {
			resp.Error = printable.Error(err).Error()
		}
		log.Info("forget requested", "ids", len(req.IDs), "dismissed", len(forgotten), "err", resp.Error)
		writeJSON(w, resp)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}

// ErrNotRunning means nothing answers on the status address: the agent is
// not running (or runs with another [status] listen).
var ErrNotRunning = errors.New("no agent answers on the status address")

// client is short-timed: the status endpoint is local, and a hung agent
// must not hang `gcingest status`.
func client() *http.Client { return &http.Client{Timeout: 10 * time.Second} }

// Fetch gets the report from a running agent at listen ("127.0.0.1:9187").
// It returns an error wrapping ErrNotRunning when nothing listens there.
func Fetch(ctx context.Context, listen string, q Query) (*Report, error) {
	var rep Report
	path := "/status"
	if v := q.Values(); len(v) > 0 {
		path += "?" + v.Encode()
	}
	if err := call(ctx, http.MethodGet, listen, path, nil, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// PostRetry asks a running agent at listen to retry images.
func PostRetry(ctx context.Context, listen string, req RetryRequest) ([]string, error) {
	var resp RetryResponse
	if err := call(ctx, http.MethodPost, listen, "/retry", req, &resp); err != nil {
		return nil, err
	}
	return resp.Queued, nil
}

// PostForget asks a running agent at listen to dismiss failed images. It
// returns the ids dismissed, and an error saying why the others were not.
func PostForget(ctx context.Context, listen string, ids []string) ([]string, error) {
	var resp ForgetResponse
	if err := call(ctx, http.MethodPost, listen, "/forget", ForgetRequest{IDs: ids}, &resp); err != nil {
		return nil, err
	}
	if resp.Error != "" {
		return resp.Forgotten, errors.New(printableLines(resp.Error))
	}
	return resp.Forgotten, nil
}

func call(ctx context.Context, method, listen, path string, body, out any) error {
	u := "http://" + listen + path
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client().Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%s %s: %w", method, u, ErrNotRunning)
		}
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, u, resp.Status, printableLines(strings.TrimSpace(string(b))))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, u, err)
	}
	return nil
}

// printableLines escapes each line of an answer's text, which the command
// prints: the agent escapes the names it quotes and separates several
// errors by line breaks, which stay; whatever else answers on the status
// address gets the same treatment.
func printableLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = printable.String(l)
	}
	return strings.Join(lines, "\n")
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
