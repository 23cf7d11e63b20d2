package gcapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// maxRedirects bounds the redirect hops of a download.
const maxRedirects = 5

// Download GETs a file URL (image file or file value) with the token and
// follows the redirect without it, writing the body to w. The file URL must
// be on the API host (the token goes there); redirect targets may be
// anywhere and never see the token. Failures before the first byte is
// written are retried like any read; a transfer that breaks later is
// returned with the count written so far, since w cannot be rewound.
func (c *Client) Download(ctx context.Context, fileURL string, w io.Writer) (int64, error) {
	u, err := url.Parse(fileURL)
	if err != nil {
		return 0, fmt.Errorf("gcapi: download URL %s cannot be parsed", redact(fileURL))
	}
	if !c.sameOrigin(u) {
		return 0, fmt.Errorf("gcapi: refusing to download %s: not on the API host %s", redact(fileURL), c.baseU.Host)
	}
	var written int64
	shown := redact(fileURL)
	err = c.retry(ctx, http.MethodGet, shown, kindSafe, func(ctx context.Context) error {
		n, err := c.downloadOnce(ctx, u, w)
		written += n
		if n > 0 && err != nil {
			// Bytes went out: a retry would duplicate them.
			return &partialError{err}
		}
		return err
	})
	var pe *partialError
	if errors.As(err, &pe) {
		err = pe.err
	}
	return written, err
}

// partialError stops the retries of a download that already wrote bytes.
// It deliberately does not unwrap, so the retry layer does not see the
// transient error inside; Download returns that error itself.
type partialError struct{ err error }

func (e *partialError) Error() string { return e.err.Error() }

func (c *Client) downloadOnce(ctx context.Context, u *url.URL, w io.Writer) (int64, error) {
	ctx, wd := newWatchdog(ctx, c.stall)
	defer wd.stop()
	cur, auth := u, true
	for hop := 0; ; hop++ {
		shown := redact(cur.String())
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, cur.String(), nil)
		if err != nil {
			return 0, fmt.Errorf("GET %s: %w", shown, noURL(err))
		}
		var resp *http.Response
		if auth {
			c.setAPIHeaders(req)
			req.Header.Set("Accept", "*/*")
			resp, err = c.hc.Do(req)
		} else {
			req.Header.Set("User-Agent", c.userAgent)
			resp, err = c.bare.Do(req)
		}
		if err != nil {
			return 0, fmt.Errorf("GET %s: %w", shown, wd.cause(noURL(err)))
		}
		switch resp.StatusCode {
		case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
			http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
			loc := resp.Header.Get("Location")
			drainClose(resp.Body)
			next, err := cur.Parse(loc)
			if loc == "" || err != nil {
				return 0, fmt.Errorf("GET %s: redirect without a usable Location", shown)
			}
			if hop >= maxRedirects {
				return 0, fmt.Errorf("GET %s: more than %d redirects", shown, maxRedirects)
			}
			if next.Scheme != "https" && next.Scheme != "http" {
				return 0, fmt.Errorf("GET %s: redirect to scheme %q refused", shown, next.Scheme)
			}
			// The token stays with the API host: a redirect target is a
			// signed URL of its own (and S3 refuses a second credential).
			cur, auth = next, false
			continue
		}
		defer drainClose(resp.Body)
		wd.kick() // the answer's headers arrived
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(wd.reader(resp.Body), maxErrorBody))
			return 0, c.scrub(newError(http.MethodGet, shown, resp, b))
		}
		n, err := io.Copy(w, wd.reader(resp.Body))
		if err != nil {
			return n, fmt.Errorf("GET %s: %w", shown, wd.cause(err))
		}
		if resp.ContentLength >= 0 && n != resp.ContentLength {
			return n, fmt.Errorf("GET %s: got %d of %d bytes: %w", shown, n, resp.ContentLength, io.ErrUnexpectedEOF)
		}
		return n, nil
	}
}
