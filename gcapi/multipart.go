package gcapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
)

// Part sizes and concurrency of UploadFile.
const (
	// DefaultPartSize is the part size when FileUpload.PartSize is 0 (gcapi's).
	DefaultPartSize = 32 << 20
	// MinPartSize is S3's minimum for every part but the last.
	MinPartSize = 5 << 20
	// DefaultPartConcurrency is the parts in flight when FileUpload.PartConcurrency is 0.
	DefaultPartConcurrency = 4
	// maxParts is S3's (and the server's) highest part number.
	maxParts = 10000
	// urlBatch is how many presigned URLs are asked for at once, at most:
	// few, so none sits long enough to expire.
	urlBatch = 5
	// urlRefreshes bounds how often one part's URL is fetched again after
	// a PUT answered 403 (expired).
	urlRefreshes = 2
	// limitChunk is the most bytes sent per wait on the rate limiter.
	limitChunk = 256 << 10
)

// FileUpload describes one file to send with UploadFile.
type FileUpload struct {
	Filename string      // basename sent to the server
	Body     io.ReaderAt // the bytes; read by parts as they are sent (concurrently, again on a retry); never after UploadFile returns
	Size     int64

	// PartSize defaults to 32 MiB and is at least 5 MiB; it grows when the
	// file would need more than 10000 parts. A resumed upload must use the
	// part size it started with, or every part is sent again.
	PartSize        int64
	PartConcurrency int // parts in flight; default 4

	// Resume, when set, is an upload this or an earlier process started for
	// the same bytes: it is fetched first; Initialized resumes from the parts
	// the server lists, Completed is returned as is, Aborted or gone starts
	// a new upload.
	Resume *Upload
	// Done holds parts already accepted (ETags recorded earlier); parts the
	// server lists with the same ETag and size are not sent again. Parts
	// the server lists that are not in Done are kept when their size is
	// right; a part in Done with another ETag than the server's is sent again.
	Done []Part

	// OnCreated is called after a new upload is created and before any part
	// is sent, so the caller can record pk and s3_upload_id durably. An
	// error aborts the upload.
	OnCreated func(*Upload) error
	// OnPart is called once a part's PUT succeeded and its ETag was checked.
	// An error stops the upload and is returned; the upload is left
	// Initialized so it can be resumed.
	OnPart func(Part) error
	// BeforeComplete, when set, is called once every part is sent and
	// before the upload is completed: the last moment the caller can
	// still decide not to use these bytes (gcingest finishes the content
	// hash it computed while the parts went, and looks for the content in
	// the archive). An error stops the upload, left Initialized as after
	// OnPart, and is returned.
	BeforeComplete func(context.Context) error
	// Progress is called with the number of bytes just sent. A part sent
	// again after a failure is not counted twice, and parts the server
	// already held are reported at the start, so the calls add up to Size.
	// Calls to OnPart and Progress never overlap.
	Progress func(n int64)
}

// callbackError marks an error returned by OnPart: the caller's own
// failure, after which the upload stays resumable.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }
func (e *callbackError) Unwrap() error { return e.err }

// partLayout says how a file is cut into parts.
type partLayout struct {
	size, partSize int64
	n              int
}

func newLayout(size, partSize int64) partLayout {
	if partSize <= 0 {
		partSize = DefaultPartSize
	}
	partSize = max(partSize, MinPartSize)
	if need := (size + maxParts - 1) / maxParts; need > partSize {
		// Round up to whole MiB so the size is stable for a given file.
		partSize = (need + 1<<20 - 1) / (1 << 20) * (1 << 20)
	}
	n := int((size + partSize - 1) / partSize)
	if n == 0 {
		n = 1 // an empty file is one empty part
	}
	return partLayout{size: size, partSize: partSize, n: n}
}

func (l partLayout) offset(num int) int64 { return int64(num-1) * l.partSize }
func (l partLayout) length(num int) int64 {
	return min(l.partSize, l.size-l.offset(num))
}

// UploadFile sends one file as a multipart upload (create or resume, parts
// in parallel with just-in-time presigned URLs, complete) and returns the
// Completed upload.
//
// Parts are streamed from Body as they are sent, a chunk at a time, with
// no copy of a part held in memory, so memory does not grow with PartSize
// or PartConcurrency; a part sent again is read from Body again. Part PUTs
// carry no token and are retried on transient failures; an expired URL
// (403) is fetched again. A Body shorter than Size fails the upload.
// On a permanent failure the upload is aborted (best effort); when ctx is
// cancelled, or the failure is transient, or the byte quota refused a part
// (IsUploadLimit), or OnPart failed, it is left Initialized so that a later
// call with Resume continues it.
func (c *Client) UploadFile(ctx context.Context, f FileUpload) (*Upload, error) {
	if err := checkFilename(f.Filename); err != nil {
		return nil, err
	}
	if f.Body == nil || f.Size < 0 {
		return nil, fmt.Errorf("gcapi: upload %s: no body or negative size", f.Filename)
	}
	lay := newLayout(f.Size, f.PartSize)
	if lay.n > maxParts {
		return nil, fmt.Errorf("gcapi: upload %s: %d bytes need more than %d parts", f.Filename, f.Size, maxParts)
	}

	u, held, err := c.startUpload(ctx, &f, lay)
	if err != nil || u.Status == UploadCompleted {
		return u, err
	}
	s := &partSender{c: c, u: u, f: &f, lay: lay, held: held}
	parts, err := s.run(ctx)
	if err == nil && f.BeforeComplete != nil {
		if cerr := f.BeforeComplete(ctx); cerr != nil {
			err = &callbackError{cerr}
		}
	}
	var done *Upload
	if err == nil {
		done, err = c.complete(ctx, u, parts)
	}
	if err != nil {
		var cb *callbackError
		// Over the quota the upload is kept: the parts sent so far are
		// resumed once space frees, and a new upload would only add to
		// the uploads the account holds.
		if ctx.Err() == nil && IsPermanent(err) && !IsUploadLimit(err) && !errors.As(err, &cb) {
			if _, aerr := c.AbortUpload(ctx, u); aerr != nil {
				c.log.Warn("aborting failed upload", "upload", u.PK, "file", f.Filename, "err", aerr)
			}
		}
		return nil, fmt.Errorf("upload %s: %w", f.Filename, err)
	}
	return done, nil
}

// startUpload resumes f.Resume when it can, or creates a new upload. It
// returns the parts the server already holds that are kept.
func (c *Client) startUpload(ctx context.Context, f *FileUpload, lay partLayout) (*Upload, map[int]Part, error) {
	if f.Resume != nil && f.Resume.PK != "" {
		u, err := c.Upload(ctx, f.Resume.PK)
		switch {
		case IsNotFound(err):
			c.log.Info("upload to resume is gone; starting over", "upload", f.Resume.PK, "file", f.Filename)
		case err != nil:
			return nil, nil, fmt.Errorf("upload %s: get upload %s to resume: %w", f.Filename, f.Resume.PK, err)
		case u.Status == UploadCompleted:
			return u, nil, nil
		case u.Status == UploadInitialized:
			parts, err := c.ListParts(ctx, u)
			if err != nil {
				return nil, nil, fmt.Errorf("upload %s: %w", f.Filename, err)
			}
			return u, keepParts(parts, f.Done, lay), nil
		default:
			c.log.Info("upload to resume cannot continue; starting over", "upload", u.PK, "status", u.Status, "file", f.Filename)
		}
	}
	u, err := c.CreateUpload(ctx, f.Filename)
	if err != nil {
		return nil, nil, err
	}
	if f.OnCreated != nil {
		if err := f.OnCreated(u); err != nil {
			if _, aerr := c.AbortUpload(ctx, u); aerr != nil {
				c.log.Warn("aborting upload after OnCreated failed", "upload", u.PK, "err", aerr)
			}
			return nil, nil, fmt.Errorf("upload %s: record created upload %s: %w", f.Filename, u.PK, err)
		}
	}
	return u, map[int]Part{}, nil
}

// keepParts picks the listed parts that can stay: right number and size,
// and the recorded ETag when there is one.
func keepParts(listed, done []Part, lay partLayout) map[int]Part {
	known := map[int]string{}
	for _, p := range done {
		known[p.PartNumber] = p.ETag
	}
	held := map[int]Part{}
	for _, p := range listed {
		if p.PartNumber < 1 || p.PartNumber > lay.n || p.ETag == "" || p.Size != lay.length(p.PartNumber) {
			continue
		}
		if e, ok := known[p.PartNumber]; ok && e != p.ETag {
			continue
		}
		held[p.PartNumber] = Part{ETag: p.ETag, PartNumber: p.PartNumber, Size: p.Size}
	}
	return held
}

// complete completes u with parts. If the answer is lost (a 500, a reset
// or timeout after sending), the upload is fetched: Completed means the
// first complete worked; Initialized means it did not and it is repeated.
func (c *Client) complete(ctx context.Context, u *Upload, parts []Part) (*Upload, error) {
	p := c.retryPolicy
	for attempt := 1; ; attempt++ {
		done, err := c.CompleteUpload(ctx, u, parts)
		if err == nil {
			if done.Status != UploadCompleted {
				return nil, fmt.Errorf("complete upload %s: status %q after complete", u.PK, done.Status)
			}
			return done, nil
		}
		if ctx.Err() != nil || !isAmbiguous(err) {
			return nil, err
		}
		got, gerr := c.Upload(ctx, u.PK)
		if gerr != nil {
			return nil, fmt.Errorf("%w (and checking the upload failed: %v)", err, gerr)
		}
		if got.Status == UploadCompleted {
			return got, nil
		}
		if got.Status != UploadInitialized || attempt >= p.MaxAttempts {
			return nil, fmt.Errorf("%w (upload now %s)", err, got.Status)
		}
		wait := p.backoff(attempt, err)
		if p.OnRetry != nil {
			p.OnRetry(ctx, http.MethodPatch, c.base+"uploads/"+u.PK+"/…/complete-multipart-upload/", attempt, wait, err)
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// partSender sends the missing parts of one upload.
type partSender struct {
	c    *Client
	u    *Upload
	f    *FileUpload
	lay  partLayout
	held map[int]Part

	todo []int // part numbers to send, ascending

	urlMu sync.Mutex
	urls  map[int]string

	cbMu sync.Mutex // serialises OnPart and Progress, guards parts
	hw   map[int]int64
	sent []Part
}

// run sends every part not held and returns all parts, ordered.
func (s *partSender) run(ctx context.Context) ([]Part, error) {
	for n := 1; n <= s.lay.n; n++ {
		if _, ok := s.held[n]; !ok {
			s.todo = append(s.todo, n)
		}
	}
	s.urls = map[int]string{}
	s.hw = map[int]int64{}
	if s.f.Progress != nil {
		var already int64
		for _, p := range s.held {
			already += p.Size
		}
		if already > 0 {
			s.f.Progress(already)
		}
	}

	conc := s.f.PartConcurrency
	if conc <= 0 {
		conc = DefaultPartConcurrency
	}
	conc = min(conc, len(s.todo))

	// The first failure stops the others. It is kept aside rather than
	// given as the context's cause: the transport reports a cancelled
	// request with its context's cause, and the other parts must not see
	// this part's error as their own.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var firstErr error
	var errOnce sync.Once
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range jobs {
				if err := s.sendPart(ctx, n); err != nil {
					errOnce.Do(func() { firstErr = err })
					cancel()
					return
				}
			}
		}()
	}
feed:
	for _, n := range s.todo {
		select {
		case jobs <- n:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	all := make([]Part, 0, s.lay.n)
	for _, p := range s.held {
		all = append(all, p)
	}
	all = append(all, s.sent...)
	sort.Slice(all, func(i, j int) bool { return all[i].PartNumber < all[j].PartNumber })
	return all, nil
}

// sendPart PUTs part n, streamed from the file, with retries.
func (s *partSender) sendPart(ctx context.Context, n int) error {
	size := s.lay.length(n)
	var etag string
	shown := "PUT part " + fmt.Sprint(n) + " of upload " + s.u.PK
	err := s.c.retry(ctx, http.MethodPut, shown, kindSafe, func(ctx context.Context) error {
		var err error
		for refresh := 0; ; refresh++ {
			var u string
			if u, err = s.url(ctx, n); err != nil {
				return err
			}
			etag, err = s.put(ctx, n, u)
			var he *Error
			if errors.As(err, &he) && he.StatusCode == http.StatusForbidden && refresh < urlRefreshes {
				// Most likely the URL expired: get a fresh one and try again now.
				s.dropURL(n, u)
				continue
			}
			return err
		}
	})
	if err != nil {
		return fmt.Errorf("part %d: %w", n, err)
	}

	p := Part{ETag: etag, PartNumber: n, Size: size}
	s.cbMu.Lock()
	defer s.cbMu.Unlock()
	s.sent = append(s.sent, p)
	if s.f.OnPart != nil {
		if err := s.f.OnPart(p); err != nil {
			return &callbackError{fmt.Errorf("record part %d: %w", n, err)}
		}
	}
	return nil
}

// permanentError marks a local failure (reading the file) as not worth
// retrying, whatever the underlying error says.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }

func permanent(err error) error { return &permanentError{err} }

// url returns a presigned URL for part n, fetching a small batch of URLs
// for n and the next parts to send when it has none.
func (s *partSender) url(ctx context.Context, n int) (string, error) {
	s.urlMu.Lock()
	defer s.urlMu.Unlock()
	if u := s.urls[n]; u != "" {
		return u, nil
	}
	// The batch is n and the lowest other part numbers still without a
	// URL: workers take parts in ascending order, so these are the parts
	// sent next, whichever worker happens to ask first.
	batch := []int{n}
	for _, m := range s.todo {
		if len(batch) >= urlBatch {
			break
		}
		if m != n && s.urls[m] == "" {
			batch = append(batch, m)
		}
	}
	sort.Ints(batch)
	got, err := s.c.PresignedURLs(ctx, s.u, batch)
	if err != nil {
		return "", err
	}
	for k, v := range got {
		s.urls[k] = v
	}
	return s.urls[n], nil
}

// dropURL forgets part n's URL if it is still old.
func (s *partSender) dropURL(n int, old string) {
	s.urlMu.Lock()
	defer s.urlMu.Unlock()
	if s.urls[n] == old {
		delete(s.urls, n)
	}
}

// put PUTs one part to its presigned URL, without the token, and returns
// the ETag the store answered. The body is read from the file as the
// transport sends it; GetBody gives the transport a body that starts again
// from the part's first byte, and the next attempt does the same.
func (s *partSender) put(ctx context.Context, n int, u string) (string, error) {
	shown := redact(u)
	off, size := s.lay.offset(n), s.lay.length(n)
	ctx, wd := newWatchdog(ctx, s.c.stall)
	// The transport may go on reading a request body after Do returned
	// (an early answer, an error). Once this attempt is over its bodies
	// read no more of the file and report no more progress, so that
	// nothing reads Body or calls Progress after UploadFile returned.
	g := &gate{}
	defer func() {
		g.close()
		wd.stop()
	}()
	newBody := func() *partBody {
		return &partBody{ctx: ctx, s: s, n: n, off: off, size: size, wd: wd, gate: g}
	}
	var body io.ReadCloser = http.NoBody
	if size > 0 {
		body = newBody()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, body)
	if err != nil {
		return "", fmt.Errorf("PUT %s: %w", shown, permanent(noURL(err)))
	}
	req.ContentLength = size
	if size > 0 {
		req.GetBody = func() (io.ReadCloser, error) { return newBody(), nil }
	}
	req.Header.Set("User-Agent", s.c.userAgent)
	// No Authorization header: the signature in the URL is the credential,
	// and the token must never reach the store.
	resp, err := s.c.bare.Do(req)
	if rerr := g.readErr(); rerr != nil {
		// The file failed us, not the network (which the transport's
		// wrapping of the error would suggest): give up on the upload.
		if err == nil {
			drainClose(resp.Body)
		}
		return "", rerr
	}
	if err != nil {
		return "", fmt.Errorf("PUT %s: %w", shown, wd.cause(noURL(err)))
	}
	defer drainClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(wd.reader(resp.Body), maxErrorBody))
		return "", newError(http.MethodPut, shown, resp, b)
	}
	etag := resp.Header.Get("ETag")
	if etag == "" {
		// S3 always sends one; without it the part cannot be completed.
		return "", fmt.Errorf("PUT %s: answer 200 without an ETag", shown)
	}
	return etag, nil
}

// gate is shared by the bodies of one PUT attempt; once closed, they stop
// reading.
type gate struct {
	mu   sync.Mutex
	over bool
	err  error // the file could not be read
}

func (g *gate) readErr() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// close waits for a read in progress and stops any later one.
func (g *gate) close() {
	g.mu.Lock()
	g.over = true
	g.mu.Unlock()
}

// errAttemptOver is what a body read after its attempt ended returns; only
// a transport still sending an abandoned request sees it.
var errAttemptOver = errors.New("gcapi: part PUT attempt is over")

// partBody is a part's request body, read straight from the file (no copy
// of the part is held): it kicks the stall watchdog, waits on the rate
// limiter per chunk and reports progress beyond what earlier attempts of
// the same part already reported.
type partBody struct {
	ctx       context.Context
	s         *partSender
	n         int
	off, size int64 // the part's bytes in the file
	read      int64 // bytes of the part this body has read
	wd        *watchdog
	gate      *gate
}

func (b *partBody) Read(p []byte) (int, error) {
	left := b.size - b.read
	if left <= 0 {
		return 0, io.EOF
	}
	want := int(min(int64(len(p)), limitChunk, left))
	if l := b.s.c.limiter; l != nil {
		if bl, ok := l.(interface{ Burst() int }); ok && bl.Burst() > 0 && bl.Burst() < want {
			want = bl.Burst()
		}
		// Waiting for the limiter is not a stall.
		b.wd.timer.Stop()
		if err := l.WaitN(b.ctx, want); err != nil {
			return 0, err
		}
	}
	b.gate.mu.Lock()
	defer b.gate.mu.Unlock()
	if b.gate.over {
		return 0, errAttemptOver
	}
	b.wd.kick()
	at := b.off + b.read
	m, err := b.s.f.Body.ReadAt(p[:want], at)
	if m < want {
		// The file is shorter than Size, or unreadable: sending it
		// again will not help.
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		b.gate.err = permanent(fmt.Errorf("read part %d of %s (bytes %d..%d): %w", b.n, b.s.f.Filename, at, at+int64(want), err))
		return 0, b.gate.err
	}
	b.read += int64(m)
	b.s.progress(b.n, b.read)
	if b.read == b.size {
		return m, io.EOF
	}
	return m, nil
}

// Close does nothing: the file belongs to the caller.
func (b *partBody) Close() error { return nil }

// progress reports the bytes of part n beyond its high-water mark.
func (s *partSender) progress(n int, sent int64) {
	if s.f.Progress == nil {
		return
	}
	s.cbMu.Lock()
	defer s.cbMu.Unlock()
	if d := sent - s.hw[n]; d > 0 {
		s.hw[n] = sent
		s.f.Progress(d)
	}
}
