// Package gcapi is a Go client for the parts of the Grand Challenge REST API
// that gcingest uses: archives, sockets, archive items, multipart uploads,
// upload sessions and images.
package gcapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// SKELETON: the signatures below are the contract other packages build
// against; the bodies are filled in by the gcapi work.
var errNotImplemented = errors.New("gcapi: not implemented yet")

// Client talks to one Grand Challenge server with one token.
type Client struct {
	base  string // ends in /api/v1/
	token string
	hc    *http.Client
	log   *slog.Logger
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client used for every request.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithLogger sets the logger for retries and other notable events.
func WithLogger(l *slog.Logger) Option { return func(c *Client) { c.log = l } }

// WithUserAgent sets the User-Agent header (default "gcingest/<version>").
func WithUserAgent(ua string) Option { return func(c *Client) {} }

// WithInsecureHTTP allows an http:// base URL for a host that is not loopback.
func WithInsecureHTTP() Option { return func(c *Client) {} }

// WithRetry sets the retry policy for API requests and part PUTs.
func WithRetry(p RetryPolicy) Option { return func(c *Client) {} }

// WithRateLimit shares one byte-rate limiter across every part PUT of this client.
func WithRateLimit(l Limiter) Option { return func(c *Client) {} }

// Limiter limits bytes per second; *rate.Limiter from golang.org/x/time/rate fits.
type Limiter interface {
	WaitN(ctx context.Context, n int) error
}

// RetryPolicy says how transient failures are retried.
type RetryPolicy struct {
	MaxAttempts int           // attempts per request including the first; 0 means the default (8)
	BaseDelay   time.Duration // first backoff (default 200ms), doubled each time, with jitter
	MaxDelay    time.Duration // cap of one backoff (default 30s); Retry-After may exceed it up to MaxDelay*4
	OnRetry     func(method, url string, attempt int, wait time.Duration, err error)
}

// New returns a client for the server at baseURL ("https://grand-challenge.org"
// or ".../api/v1/"). http:// is refused unless the host is loopback or
// WithInsecureHTTP is given.
func New(baseURL, token string, opts ...Option) (*Client, error) {
	return nil, errNotImplemented
}

// ArchiveBySlug returns the one archive with that slug; *Error with
// StatusCode 404 (IsNotFound) when the account cannot see it.
func (c *Client) ArchiveBySlug(ctx context.Context, slug string) (*Archive, error) {
	return nil, errNotImplemented
}

// InterfaceBySlug returns the socket with that slug.
func (c *Client) InterfaceBySlug(ctx context.Context, slug string) (*Interface, error) {
	return nil, errNotImplemented
}

// ArchiveItems lists every item of the archive (by archive pk), walking all
// pages and de-duplicating by pk.
func (c *Client) ArchiveItems(ctx context.Context, archivePK string) ([]ArchiveItem, error) {
	return nil, errNotImplemented
}

// ArchiveItemByTitle finds the item with that exact title in the archive;
// (nil, nil) when there is none.
func (c *Client) ArchiveItemByTitle(ctx context.Context, archivePK, title string) (*ArchiveItem, error) {
	return nil, errNotImplemented
}

// ArchiveItem gets one item by pk.
func (c *Client) ArchiveItem(ctx context.Context, pk string) (*ArchiveItem, error) {
	return nil, errNotImplemented
}

// CreateArchiveItem creates an item with a title in the archive (by its api_url).
// A title conflict is reported as an error for which IsTitleConflict is true.
func (c *Client) CreateArchiveItem(ctx context.Context, archiveAPIURL, title string) (*ArchiveItem, error) {
	return nil, errNotImplemented
}

// UpdateArchiveItem PATCHes the given values onto the item.
func (c *Client) UpdateArchiveItem(ctx context.Context, pk string, values []ValueUpdate) (*ArchiveItem, error) {
	return nil, errNotImplemented
}

// UploadSessions lists the caller's upload sessions.
func (c *Client) UploadSessions(ctx context.Context) ([]UploadSession, error) {
	return nil, errNotImplemented
}

// UploadSession gets one upload session by pk.
func (c *Client) UploadSession(ctx context.Context, pk string) (*UploadSession, error) {
	return nil, errNotImplemented
}

// ImageFilter selects images; empty fields are not sent.
type ImageFilter struct {
	Archive string // archive pk
	Origin  string // upload session pk
}

// Images lists images matching the filter, all pages, de-duplicated.
func (c *Client) Images(ctx context.Context, f ImageFilter) ([]Image, error) {
	return nil, errNotImplemented
}

// Image gets one image by pk or api_url.
func (c *Client) Image(ctx context.Context, pkOrURL string) (*Image, error) {
	return nil, errNotImplemented
}

// Download GETs a file URL (image file or file value) with the token and
// follows the redirect without it, writing the body to w.
func (c *Client) Download(ctx context.Context, fileURL string, w io.Writer) (int64, error) {
	return 0, errNotImplemented
}

// CreateUpload starts a multipart upload for a file name (a basename).
func (c *Client) CreateUpload(ctx context.Context, filename string) (*Upload, error) {
	return nil, errNotImplemented
}

// Upload gets one upload by pk.
func (c *Client) Upload(ctx context.Context, pk string) (*Upload, error) {
	return nil, errNotImplemented
}

// Uploads lists the caller's uploads.
func (c *Client) Uploads(ctx context.Context) ([]Upload, error) {
	return nil, errNotImplemented
}

// PresignedURLs asks for part URLs of an Initialized upload.
func (c *Client) PresignedURLs(ctx context.Context, u *Upload, partNumbers []int) (map[int]string, error) {
	return nil, errNotImplemented
}

// ListParts lists the parts the server holds for an Initialized upload.
func (c *Client) ListParts(ctx context.Context, u *Upload) ([]Part, error) {
	return nil, errNotImplemented
}

// CompleteUpload completes an Initialized upload with its parts in order.
func (c *Client) CompleteUpload(ctx context.Context, u *Upload, parts []Part) (*Upload, error) {
	return nil, errNotImplemented
}

// AbortUpload aborts an Initialized upload.
func (c *Client) AbortUpload(ctx context.Context, u *Upload) (*Upload, error) {
	return nil, errNotImplemented
}

// FileUpload describes one file to send with UploadFile.
type FileUpload struct {
	Filename string      // basename sent to the server
	Body     io.ReaderAt // the bytes; read by parts, never whole
	Size     int64

	PartSize        int64 // default 32 MiB; at least 5 MiB
	PartConcurrency int   // parts in flight; default 4

	// Resume, when set, is an upload this or an earlier process started for
	// the same bytes: it is fetched first; Initialized resumes from the parts
	// the server lists, Completed is returned as is, Aborted or gone starts
	// a new upload.
	Resume *Upload
	// Done holds parts already accepted (ETags recorded earlier); parts the
	// server lists with the same ETag and size are not sent again.
	Done []Part

	// OnCreated is called after a new upload is created and before any part
	// is sent, so the caller can record pk and s3_upload_id durably. An
	// error aborts the upload.
	OnCreated func(*Upload) error
	// OnPart is called once a part's PUT succeeded and its ETag was checked.
	OnPart func(Part) error
	// Progress is called with the number of bytes just sent.
	Progress func(n int64)
}

// UploadFile sends one file as a multipart upload (create or resume, parts
// in parallel with just-in-time presigned URLs, complete) and returns the
// Completed upload.
func (c *Client) UploadFile(ctx context.Context, f FileUpload) (*Upload, error) {
	return nil, errNotImplemented
}

// Error is an HTTP error answer from the server or from a presigned URL.
type Error struct {
	Method     string
	URL        string // without query secrets
	StatusCode int
	Message    string // the server's message, verbatim (object or list form flattened)
	Body       []byte // raw body, capped
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	return e.Method + " " + e.URL + ": " + http.StatusText(e.StatusCode) + ": " + e.Message
}

// IsNotFound reports whether err is a 404 from the server.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusNotFound
}

// IsTransient reports whether err is worth retrying later: 429, 502, 503,
// 504, 507, connection resets, timeouts.
func IsTransient(err error) bool { return false }

// IsTitleConflict reports whether a create failed because an item with that
// title already exists in the archive.
func IsTitleConflict(err error) bool { return false }
