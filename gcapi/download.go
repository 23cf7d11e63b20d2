package gcapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
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
		return c.copyBody(resp, wd, shown, w)
	}
}

// copyBody writes a 200 answer's body to w, checking its length; any other
// status is an *Error. It closes the body.
func (c *Client) copyBody(resp *http.Response, wd *watchdog, shown string, w io.Writer) (int64, error) {
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

// DICOMInstances gets the signed GetInstance requests of the DICOM image
// set an image (by pk) holds. The signatures are short-lived (minutes), so
// ask again before sending an old one rather than keeping them.
func (c *Client) DICOMInstances(ctx context.Context, imagePK string) (*DICOMInstances, error) {
	if err := checkPK(imagePK); err != nil {
		return nil, err
	}
	var out DICOMInstances
	if err := c.call(ctx, http.MethodGet, "cases/images/"+imagePK+"/dicom/instances/", nil, nil, &out, kindSafe); err != nil {
		return nil, err
	}
	return &out, nil
}

// DownloadSigned sends a request the server signed for another service (a
// DICOMInstance's GetInstance) as given, writing the body of its 200 answer
// to w. The signature covers the method, URL and headers, so nothing is
// added but a User-Agent: never the token, and no redirect is followed.
// Only a GET without a body is sent; the URL must be https, or http when
// the API itself is (a test server). Retries like Download.
func (c *Client) DownloadSigned(ctx context.Context, req SignedRequest, w io.Writer) (int64, error) {
	shown := redact(req.URL)
	if !strings.EqualFold(req.Method, http.MethodGet) {
		return 0, fmt.Errorf("gcapi: refusing signed request %s %s: only GET is downloaded", req.Method, shown)
	}
	if d := strings.TrimSpace(string(req.Data)); d != "" && d != "null" && d != `""` {
		return 0, fmt.Errorf("gcapi: refusing signed request GET %s: it carries a body", shown)
	}
	u, err := url.Parse(req.URL)
	if err != nil || u.Host == "" {
		return 0, fmt.Errorf("gcapi: signed request URL %s cannot be parsed", shown)
	}
	if u.User != nil || (u.Scheme != "https" && !(u.Scheme == "http" && c.baseU.Scheme == "http")) {
		return 0, fmt.Errorf("gcapi: refusing signed request URL %s: not https", shown)
	}
	var written int64
	err = c.retry(ctx, http.MethodGet, shown, kindSafe, func(ctx context.Context) error {
		n, err := c.signedOnce(ctx, u, req.Headers, shown, w)
		written += n
		if n > 0 && err != nil {
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

func (c *Client) signedOnce(ctx context.Context, u *url.URL, headers map[string]string, shown string, w io.Writer) (int64, error) {
	ctx, wd := newWatchdog(ctx, c.stall)
	defer wd.stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", shown, noURL(err))
	}
	req.Header.Set("User-Agent", c.userAgent)
	for k, v := range headers {
		switch http.CanonicalHeaderKey(k) {
		case "Host":
			req.Host = v
		case "Content-Length", "Transfer-Encoding", "Connection":
			// Framing is the transport's business; a GET has no body.
		default:
			req.Header.Set(k, v)
		}
	}
	resp, err := c.bare.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", shown, wd.cause(noURL(err)))
	}
	return c.copyBody(resp, wd, shown, w)
}
