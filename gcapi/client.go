// Package gcapi is a Go client for the parts of the Grand Challenge REST API
// that gcingest uses: archives, sockets, archive items, multipart uploads,
// upload sessions and images.
//
// Every method takes a context and retries transient failures according to
// the client's RetryPolicy (see its doc for which requests are repeated and
// when). Failures are returned as *Error when the server answered, and can
// be classified with IsTransient, IsPermanent, IsNotFound and
// IsTitleConflict; errors.Is(err, ErrUnauthorized) holds for a refused
// token, errors.Is(err, ErrAmbiguous) for a create that may have taken
// effect, and a refusal by a proxy or firewall in front of the API is a
// *ProxyError (transient).
//
// Answers are bounded: a JSON answer larger than 32 MiB is refused, an
// answer that stops moving (less than 1 KiB per stall timeout) is cut, and
// a list is walked no further than its first page's count promised.
//
// The token is sent only to the API host given to New: absolute URLs from
// the server that point elsewhere are refused, presigned part URLs and
// download redirect targets are fetched without it, and redirects of API
// calls are never followed.
package gcapi

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
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to one Grand Challenge server with one token. It is safe for
// concurrent use.
type Client struct {
	base  string   // ends in /api/v1/
	baseU *url.URL // parsed base
	token string
	hc    *http.Client // API calls: never follows redirects
	bare  *http.Client // presigned URLs and redirect targets: no token, no redirects
	log   *slog.Logger

	userHC      *http.Client
	userAgent   string
	insecure    bool
	retryPolicy RetryPolicy
	limiter     Limiter
	stall       time.Duration
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client used for every request. Its transport
// is shared; the client's redirect policy is not used (gcapi never follows
// redirects of API calls and follows download redirects itself), and its
// cookie jar is not used for presigned URLs. Its Timeout, if any, limits
// each attempt, part PUTs included: leave it 0 and rely on
// WithStallTimeout, which cuts stalled transfers but not slow ones.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.userHC = hc } }

// WithLogger sets the logger for retries and other notable events. The
// token and presigned URLs are never logged.
func WithLogger(l *slog.Logger) Option { return func(c *Client) { c.log = l } }

// WithUserAgent sets the User-Agent header (default "gcingest"); callers
// add their version, e.g. "gcingest/1.2.0".
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// WithInsecureHTTP allows an http:// base URL for a host that is not loopback.
func WithInsecureHTTP() Option { return func(c *Client) { c.insecure = true } }

// WithRetry sets the retry policy for API requests and part PUTs.
func WithRetry(p RetryPolicy) Option { return func(c *Client) { c.retryPolicy = p } }

// WithRateLimit shares one byte-rate limiter across every part PUT of this
// client. It is waited on for each chunk of at most 256 KiB sent (or the
// limiter's Burst, if it has a Burst() int method and that is smaller).
func WithRateLimit(l Limiter) Option { return func(c *Client) { c.limiter = l } }

// WithStallTimeout sets how long a request may go without any byte moving
// (request body sent, answer headers or body received) before the attempt
// is cancelled and counted as a timeout (default 60s). It is not a limit on
// the total time: a slow but moving transfer is never cut.
func WithStallTimeout(d time.Duration) Option { return func(c *Client) { c.stall = d } }

// Limiter limits bytes per second; *rate.Limiter from golang.org/x/time/rate fits.
type Limiter interface {
	WaitN(ctx context.Context, n int) error
}

const defaultStallTimeout = 60 * time.Second

// New returns a client for the server at baseURL ("https://grand-challenge.org"
// or ".../api/v1/"). http:// is refused unless the host is loopback or
// WithInsecureHTTP is given. The token may be given bare or as "Bearer <token>".
func New(baseURL, token string, opts ...Option) (*Client, error) {
	c := &Client{userAgent: "gcingest", stall: defaultStallTimeout}
	for _, o := range opts {
		o(c)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.retryPolicy = c.retryPolicy.withDefaults()
	if c.stall <= 0 {
		c.stall = defaultStallTimeout
	}

	u, err := parseBase(baseURL, c.insecure)
	if err != nil {
		return nil, err
	}
	c.baseU = u
	c.base = u.String()

	// gcapi's rule: collapse the spaces and keep the last word, so that
	// "Bearer xyz" and "xyz" both work.
	f := strings.Fields(token)
	if len(f) == 0 {
		return nil, errors.New("gcapi: empty token")
	}
	c.token = f[len(f)-1]

	src := c.userHC
	if src == nil {
		src = &http.Client{Transport: defaultTransport()}
	}
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.hc = &http.Client{Transport: src.Transport, Jar: src.Jar, Timeout: src.Timeout, CheckRedirect: noRedirect}
	c.bare = &http.Client{Transport: src.Transport, Timeout: src.Timeout, CheckRedirect: noRedirect}
	return c, nil
}

func defaultTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	// Several parts in flight to the same S3 host: keep their connections.
	t.MaxIdleConnsPerHost = 32
	return t
}

// parseBase normalises the base URL to scheme://host[/prefix]/api/v1/.
func parseBase(raw string, insecure bool) (*url.URL, error) {
	// The URL may carry a password or token ("https://user:TOKEN@host"):
	// errors show it without user info, query or fragment.
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return nil, fmt.Errorf("gcapi: base URL %q cannot be parsed", redact(raw))
	}
	shown := redact(raw)
	if u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("gcapi: base URL %q: want https://host", shown)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("gcapi: base URL %q: no user info, query or fragment allowed (the token goes in the token setting)", shown)
	}
	if u.Scheme == "http" && !insecure && !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("gcapi: base URL %q: https is required for a host that is not loopback", shown)
	}
	p := strings.TrimRight(u.Path, "/")
	if !strings.HasSuffix(p, "/api/v1") {
		p += "/api/v1"
	}
	u.Path = p + "/"
	u.RawPath = ""
	return u, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// BaseURL returns the API root the client talks to, ending in "/api/v1/".
func (c *Client) BaseURL() string { return c.base }

// resolve turns a path relative to the API root, or an absolute URL on the
// API host, into an absolute URL with a trailing slash on its path and the
// query q added. Absolute URLs on another host or scheme are refused: the
// token must not travel there.
func (c *Client) resolve(ref string, q url.Values) (*url.URL, error) {
	var u *url.URL
	if strings.Contains(ref, "://") {
		p, err := url.Parse(ref)
		if err != nil {
			return nil, fmt.Errorf("gcapi: URL %q cannot be parsed", redact(ref))
		}
		if !c.sameOrigin(p) {
			return nil, fmt.Errorf("gcapi: refusing URL %s: not on the API host %s", redact(ref), c.baseU.Host)
		}
		u = p
	} else {
		if strings.HasPrefix(ref, "/") || hasDotSegment(ref) {
			return nil, fmt.Errorf("gcapi: bad API path %q", ref)
		}
		p, err := c.baseU.Parse(ref)
		if err != nil {
			return nil, fmt.Errorf("gcapi: API path %q: %w", ref, err)
		}
		u = p
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
		u.RawPath = ""
	}
	if len(q) > 0 {
		qq := u.Query()
		for k, vs := range q {
			qq[k] = vs
		}
		u.RawQuery = qq.Encode()
	}
	return u, nil
}

// sameOrigin reports whether u is on the API host with the base's scheme.
func (c *Client) sameOrigin(u *url.URL) bool {
	return u.User == nil && strings.EqualFold(u.Scheme, c.baseU.Scheme) && strings.EqualFold(u.Host, c.baseU.Host)
}

// redact drops the query and user info of a URL, where presigned URLs keep
// their signatures, for errors and logs.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.IndexAny(raw, "?#"); i >= 0 {
			raw = raw[:i]
		}
		// Unparsable, but user info may still be there: drop it by hand.
		if i := strings.Index(raw, "://"); i >= 0 {
			auth := raw[i+3:]
			if j := strings.IndexByte(auth, '/'); j >= 0 {
				auth = auth[:j]
			}
			if at := strings.LastIndexByte(auth, '@'); at >= 0 {
				raw = raw[:i+3] + raw[i+3+at+1:]
			}
		}
		return raw
	}
	u.User = nil
	u.RawQuery = ""
	u.Fragment = ""
	return u.String()
}

// noURL drops the *url.Error around a transport error: it repeats the
// request's URL in full, query (a presigned URL's signature) and user name
// included, where the caller shows a redacted one.
func noURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// redactAPI keeps an API URL's query (filters and offsets, no secrets) but
// drops user info.
func redactAPI(u *url.URL) string {
	v := *u
	v.User = nil
	v.Fragment = ""
	return v.String()
}

// call does one API request with retries: JSON body in (if in != nil),
// JSON answer decoded into out (if out != nil).
func (c *Client) call(ctx context.Context, method, ref string, q url.Values, in, out any, kind reqKind) error {
	u, err := c.resolve(ref, q)
	if err != nil {
		return err
	}
	var body []byte
	if in != nil {
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("gcapi: encode %s %s: %w", method, redactAPI(u), err)
		}
	}
	shown := redactAPI(u)
	err = c.retry(ctx, method, shown, kind, func(ctx context.Context) error {
		return c.once(ctx, method, u.String(), shown, body, out)
	})
	if kind == kindCreate && ctx.Err() == nil && isAmbiguous(err) {
		return &ambiguousError{err}
	}
	return err
}

// once does a single attempt of an API request.
func (c *Client) once(ctx context.Context, method, u, shown string, body []byte, out any) error {
	ctx, wd := newWatchdog(ctx, c.stall)
	defer wd.stop()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("gcapi: %s %s: %w", method, shown, noURL(err))
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c.setAPIHeaders(req)
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, shown, wd.cause(noURL(err)))
	}
	defer drainClose(resp.Body)
	wd.kick() // the answer's headers arrived
	respBody := wd.reader(resp.Body)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, rerr := io.ReadAll(io.LimitReader(respBody, maxErrorBody))
		if rerr != nil && len(b) == 0 {
			// The error answer itself broke: report the status anyway.
			c.log.Debug("reading error answer failed", "method", method, "url", shown, "err", rerr)
		}
		if pe := proxyRefusal(method, shown, resp, b); pe != nil {
			return pe
		}
		return c.scrub(newError(method, shown, resp, b))
	}
	if out == nil {
		return nil
	}
	if resp.ContentLength > maxAnswer {
		return fmt.Errorf("%s %s: answer of %d bytes is larger than the %d MiB an API answer may be", method, shown, resp.ContentLength, maxAnswer>>20)
	}
	lr := &capReader{r: respBody, left: maxAnswer}
	if err := json.NewDecoder(lr).Decode(out); err != nil {
		if lr.over {
			return fmt.Errorf("%s %s: answer is larger than the %d MiB an API answer may be", method, shown, maxAnswer>>20)
		}
		return fmt.Errorf("%s %s: decode answer: %w", method, shown, wd.cause(err))
	}
	return nil
}

// maxAnswer caps the JSON answer of one API request (a page of 100 items
// with their values is well under 1 MiB), so that a broken or hostile
// server cannot make the client buffer gigabytes.
const maxAnswer = 32 << 20

// capReader reads at most left bytes of r and then fails, remembering that
// the cap was hit.
type capReader struct {
	r    io.Reader
	left int64
	over bool
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		c.over = true
		return 0, errAnswerTooLarge
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

var errAnswerTooLarge = errors.New("answer too large")

// proxyRefusal recognises a 403 that the API did not send: the API answers
// every refusal with JSON ({"detail": ...}), while proxies, firewalls and
// web application filters in front of it send an HTML page. It names who
// answered: the Server header, else Via, else the host.
func proxyRefusal(method, shown string, resp *http.Response, body []byte) *ProxyError {
	if resp.StatusCode != http.StatusForbidden {
		return nil
	}
	ct := strings.ToLower(resp.Header.Get("Content-Type"))
	b := bytes.TrimSpace(body)
	if strings.Contains(ct, "json") || (len(b) > 0 && (b[0] == '{' || b[0] == '[') && json.Valid(b)) {
		return nil
	}
	server := resp.Header.Get("Server")
	if server == "" {
		server = resp.Header.Get("Via")
	}
	if server == "" && resp.Request != nil {
		server = "host " + resp.Request.URL.Host
	}
	if len(server) > 100 {
		server = server[:100] + "…"
	}
	return &ProxyError{Method: method, URL: shown, StatusCode: resp.StatusCode, Server: strconv.Quote(server)}
}

// scrub removes the token from an error answer: a server (or something in
// front of it) echoing the request's headers must not put the token into
// an error that gets printed or logged.
func (c *Client) scrub(e *Error) *Error {
	if len(c.token) < 4 { // too short to tell apart from ordinary text
		return e
	}
	e.Message = strings.ReplaceAll(e.Message, c.token, "[token]")
	e.Body = bytes.ReplaceAll(e.Body, []byte(c.token), []byte("[token]"))
	return e
}

func (c *Client) setAPIHeaders(req *http.Request) {
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
}

// drainClose reads a little of what is left (so the connection can be
// reused) and closes the body.
func drainClose(rc io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(rc, 256<<10))
	_ = rc.Close()
}

// ArchiveBySlug returns the one archive with that slug; *Error with
// StatusCode 404 (IsNotFound) when the account cannot see it.
func (c *Client) ArchiveBySlug(ctx context.Context, slug string) (*Archive, error) {
	all, err := listAll(ctx, c, "archives/", url.Values{"slug": {slug}}, func(a Archive) string { return a.PK })
	if err != nil {
		return nil, fmt.Errorf("find archive %q: %w", slug, err)
	}
	// The server filters by slug and sends no slug to compare with.
	found := all
	switch len(found) {
	case 1:
		found[0].Slug = slug
		return &found[0], nil
	case 0:
		return nil, &Error{Method: http.MethodGet, URL: c.base + "archives/?slug=" + url.QueryEscape(slug),
			StatusCode: http.StatusNotFound, Message: fmt.Sprintf("no archive with slug %q is visible to this token", slug)}
	default:
		return nil, fmt.Errorf("find archive %q: the server lists %d archives with that slug", slug, len(found))
	}
}

// InterfaceBySlug returns the socket with that slug; *Error with StatusCode
// 404 when there is none.
func (c *Client) InterfaceBySlug(ctx context.Context, slug string) (*Interface, error) {
	all, err := listAll(ctx, c, "components/interfaces/", url.Values{"slug": {slug}}, func(i Interface) string { return fmt.Sprint(i.PK) })
	if err != nil {
		return nil, fmt.Errorf("find interface %q: %w", slug, err)
	}
	for i := range all {
		if all[i].Slug == slug {
			return &all[i], nil
		}
	}
	return nil, &Error{Method: http.MethodGet, URL: c.base + "components/interfaces/?slug=" + url.QueryEscape(slug),
		StatusCode: http.StatusNotFound, Message: fmt.Sprintf("no interface with slug %q", slug)}
}

// ArchiveItems lists every item of the archive (by archive pk), walking all
// pages and de-duplicating by pk.
func (c *Client) ArchiveItems(ctx context.Context, archivePK string) ([]ArchiveItem, error) {
	items, err := listAll(ctx, c, "archives/items/", url.Values{"archive": {archivePK}}, func(it ArchiveItem) string { return it.PK })
	if err != nil {
		return nil, fmt.Errorf("list items of archive %s: %w", archivePK, err)
	}
	return items, nil
}

// ArchiveItemByTitle finds the item with that exact title in the archive;
// (nil, nil) when there is none. The API cannot filter by title, so this
// lists the whole archive.
func (c *Client) ArchiveItemByTitle(ctx context.Context, archivePK, title string) (*ArchiveItem, error) {
	items, err := c.ArchiveItems(ctx, archivePK)
	if err != nil {
		return nil, err
	}
	for i := range items {
		if items[i].Title == title {
			return &items[i], nil
		}
	}
	return nil, nil
}

// ArchiveItem gets one item by pk.
func (c *Client) ArchiveItem(ctx context.Context, pk string) (*ArchiveItem, error) {
	if err := checkPK(pk); err != nil {
		return nil, err
	}
	var it ArchiveItem
	if err := c.call(ctx, http.MethodGet, "archives/items/"+pk+"/", nil, nil, &it, kindSafe); err != nil {
		return nil, err
	}
	return &it, nil
}

// CreateArchiveItem creates an item with a title in the archive (by its api_url).
// A title conflict is reported as an error for which IsTitleConflict is true.
// The create is not repeated after an ambiguous failure (a 500, 502, 503
// or 504, a reset after sending; errors.Is(err, ErrAmbiguous)): look the
// title up with ArchiveItemByTitle then.
func (c *Client) CreateArchiveItem(ctx context.Context, archiveAPIURL, title string) (*ArchiveItem, error) {
	in := struct {
		Archive string `json:"archive"`
		Title   string `json:"title"`
	}{archiveAPIURL, title}
	var it ArchiveItem
	if err := c.call(ctx, http.MethodPost, "archives/items/", nil, in, &it, kindCreate); err != nil {
		return nil, err
	}
	return &it, nil
}

// UpdateArchiveItem PATCHes the given values onto the item. The answer
// lists values with only their interface slug set (the server's PATCH
// form). An ambiguous failure is not repeated (errors.Is(err,
// ErrAmbiguous)): a second PATCH with the same uploads would start a second
// import (grand-challenge.org app/grandchallenge/components/tasks.py).
func (c *Client) UpdateArchiveItem(ctx context.Context, pk string, values []ValueUpdate) (*ArchiveItem, error) {
	if err := checkPK(pk); err != nil {
		return nil, err
	}
	in := struct {
		Values []ValueUpdate `json:"values"`
	}{values}
	var it ArchiveItem
	if err := c.call(ctx, http.MethodPatch, "archives/items/"+pk+"/", nil, in, &it, kindCreate); err != nil {
		return nil, err
	}
	return &it, nil
}

// UploadSessions lists the caller's upload sessions.
func (c *Client) UploadSessions(ctx context.Context) ([]UploadSession, error) {
	s, err := listAll(ctx, c, "cases/upload-sessions/", nil, func(s UploadSession) string { return s.PK })
	if err != nil {
		return nil, fmt.Errorf("list upload sessions: %w", err)
	}
	return s, nil
}

// UploadSession gets one upload session by pk.
func (c *Client) UploadSession(ctx context.Context, pk string) (*UploadSession, error) {
	if err := checkPK(pk); err != nil {
		return nil, err
	}
	var s UploadSession
	if err := c.call(ctx, http.MethodGet, "cases/upload-sessions/"+pk+"/", nil, nil, &s, kindSafe); err != nil {
		return nil, err
	}
	return &s, nil
}

// ImageFilter selects images; empty fields are not sent.
type ImageFilter struct {
	Archive string // archive pk
	Origin  string // upload session pk
}

// Images lists images matching the filter, all pages, de-duplicated.
func (c *Client) Images(ctx context.Context, f ImageFilter) ([]Image, error) {
	q := url.Values{}
	if f.Archive != "" {
		q.Set("archive", f.Archive)
	}
	if f.Origin != "" {
		q.Set("origin", f.Origin)
	}
	imgs, err := listAll(ctx, c, "cases/images/", q, func(i Image) string { return i.PK })
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	return imgs, nil
}

// Image gets one image by pk or api_url (which must be on the API host).
func (c *Client) Image(ctx context.Context, pkOrURL string) (*Image, error) {
	ref := pkOrURL
	if !strings.Contains(pkOrURL, "://") {
		if err := checkPK(pkOrURL); err != nil {
			return nil, err
		}
		ref = "cases/images/" + pkOrURL + "/"
	}
	var img Image
	if err := c.call(ctx, http.MethodGet, ref, nil, nil, &img, kindSafe); err != nil {
		return nil, err
	}
	return &img, nil
}

// hasDotSegment reports whether the path of ref (up to any query) has a
// "." or ".." segment, which would move the request elsewhere. Only whole
// segments count: S3 upload IDs contain ".." inside a segment.
func hasDotSegment(ref string) bool {
	p, _, _ := strings.Cut(ref, "?")
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// checkPK refuses a pk that would change the URL's path.
func checkPK(pk string) error {
	if pk == "" || strings.ContainsAny(pk, "/?#%") || pk == "." || pk == ".." {
		return fmt.Errorf("gcapi: bad pk %q", pk)
	}
	return nil
}

// ErrProbeCreated is returned by CanUpload when the server, against every
// rule it has, created an item from the probe.
var ErrProbeCreated = errors.New("the upload-rights probe created an item")

// CanUpload reports whether this account may add items to the archive (by
// its api_url) without creating one. It posts an item whose values are
// invalid on purpose: the server validates every field of a create and
// reports all errors together, and its archive field accepts only archives
// the user may upload to (grand-challenge.org
// app/grandchallenge/archives/serializers.py, ArchiveItemPostSerializer:
// a queryset filtered by upload_archive). So the 400 names "archive" exactly
// when the account cannot upload; a create never carries values either
// (components/serializers.py: "Values can only be added via update").
func (c *Client) CanUpload(ctx context.Context, archiveAPIURL string) (bool, error) {
	in := struct {
		Archive string              `json:"archive"`
		Title   string              `json:"title"`
		Values  []map[string]string `json:"values"`
	}{archiveAPIURL, "gcingest check: upload rights (never created)", []map[string]string{{}}}
	var it ArchiveItem
	err := c.call(ctx, http.MethodPost, "archives/items/", nil, in, &it, kindCreate)
	if err == nil {
		return false, fmt.Errorf("probe archive %s: %w (pk %s)", archiveAPIURL, ErrProbeCreated, it.PK)
	}
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusBadRequest {
		return false, err
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(e.Body, &fields) == nil {
		_, bad := fields["archive"]
		return !bad, nil
	}
	// A list answer is a non-field error: the fields, archive among them,
	// passed.
	return true, nil
}
