package gcapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxErrorBody caps how much of an error answer is kept in Error.Body.
const maxErrorBody = 64 << 10

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
	s := e.Method + " " + e.URL + ": " + strconv.Itoa(e.StatusCode) + " " + http.StatusText(e.StatusCode)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is makes errors.Is(err, ErrUnauthorized) true for a 401.
func (e *Error) Is(target error) bool {
	return target == ErrUnauthorized && e.StatusCode == http.StatusUnauthorized
}

// ErrUnauthorized matches (with errors.Is) a 401 answer: the server refused
// the token (missing, mistyped, revoked or expired). Retrying does not help;
// an agent stops and asks for a new token.
var ErrUnauthorized = errors.New("gcapi: the server refused the token")

// ErrAmbiguous matches (with errors.Is) the failure of a request that
// creates or changes something (POST uploads, POST items, PATCH items,
// complete, abort) when the request may nevertheless have taken effect: a
// 500, 502, 503 or 504 answer, or a connection that broke or timed out
// after the request was sent. Such a request is never repeated by the
// client; the caller finds out what the server holds (the item by its
// title, the PATCH by the item's values) before sending it again, or, for
// an upload, creates a new one (see CreateUpload). Apart from a 500, these failures are
// also transient (IsTransient).
var ErrAmbiguous = errors.New("the request may have taken effect")

// ambiguousError marks a create that failed ambiguously; it keeps the
// underlying error's text and classification.
type ambiguousError struct{ err error }

func (e *ambiguousError) Error() string        { return e.err.Error() + " (" + ErrAmbiguous.Error() + ")" }
func (e *ambiguousError) Unwrap() error        { return e.err }
func (e *ambiguousError) Is(target error) bool { return target == ErrAmbiguous }

// ProxyError is a refusal that came from something between the client and
// the Grand Challenge API (a proxy, firewall or gateway), not from the API
// itself: a 403 whose body is not the API's JSON (an HTML page). The
// refusal is the network's, not about the request, so it is transient;
// Server names who answered, so the operator knows whom to ask.
type ProxyError struct {
	Method     string
	URL        string // without query secrets
	StatusCode int
	Server     string // the Server or Via header, or the host that answered
}

func (e *ProxyError) Error() string {
	return fmt.Sprintf("%s %s: %d %s from %s, not from the Grand Challenge API (a proxy or firewall refused the request; ask its administrator to let this host reach the API)",
		e.Method, e.URL, e.StatusCode, http.StatusText(e.StatusCode), e.Server)
}

// IsNotFound reports whether err is a 404 from the server.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusNotFound
}

// stallError reports an attempt cancelled because no byte moved for too
// long. It is a timeout, so IsTransient holds for it.
type stallError struct{ after time.Duration }

func (e *stallError) Error() string {
	return fmt.Sprintf("no progress for %s", e.after)
}

// Timeout marks the stall as a timeout (net.Error style).
func (e *stallError) Timeout() bool { return true }

// IsTransient reports whether err is worth retrying later: 408, 429, 502,
// 503, 504, 507, a proxy's refusal (*ProxyError), connection resets and
// refusals, unexpected EOFs, timeouts and stalls. A cancelled context is
// not transient. A 500 is not transient either: it is ambiguous (the
// request may have taken effect), see IsPermanent.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var st *stallError
	var pe *ProxyError
	if errors.As(err, &st) || errors.As(err, &pe) {
		return true
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return transientStatus(e.StatusCode) || isS3Retry(e)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return true // a resolver that fails is a network that is down, for an agent
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) // any other socket-level failure
}

// isS3Retry reports S3's 400 answers to a part PUT that a new attempt
// heals: the body came too slowly (RequestTimeout), or the presigned URL's
// credentials expired (ExpiredToken, RequestExpired, TokenRefreshRequired);
// the next attempt asks for fresh URLs
// (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html).
func isS3Retry(e *Error) bool {
	if e.StatusCode != http.StatusBadRequest {
		return false
	}
	for _, code := range []string{"RequestTimeout", "ExpiredToken", "RequestExpired", "TokenRefreshRequired"} {
		if strings.HasPrefix(e.Message, code+":") || e.Message == code || bytes.Contains(e.Body, []byte("<Code>"+code+"</Code>")) {
			return true
		}
	}
	return false
}

func transientStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout, http.StatusInsufficientStorage:
		return true
	}
	return false
}

// IsPermanent reports whether repeating the same request will fail the same
// way: a 4xx answer other than 408 and 429, or a local error (a bad URL, an
// unreadable file, an undecodable answer). A 500 is neither transient nor
// permanent: the request may or may not have taken effect, so a caller
// finds out what the server holds before repeating a create. A cancelled
// context is not permanent.
func IsPermanent(err error) bool {
	if err == nil || IsTransient(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.StatusCode >= 400 && e.StatusCode < 500
	}
	return true
}

// IsUploadLimit reports the server's byte quota: presigning a part answers
// 403 "Upload limit reached" while the user's completed, not yet imported
// uploads fill it (grand-challenge.org app/grandchallenge/uploads/views.py,
// UserUploadViewSet.generate_presigned_urls). It is permanent for the
// request but heals as imports take uploads or the server's cleanup deletes
// them, so the upload it refused is kept to be resumed, never started over.
func IsUploadLimit(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusForbidden &&
		strings.Contains(strings.ToLower(e.Message), "upload limit")
}

// IsTitleConflict reports whether a create failed because an item with that
// title already exists in the archive (the serializer's unique check on
// title and archive; 400 "The fields title, archive must make a unique set.").
// The database constraint may fire first and answer 500; that case cannot be
// told apart from other 500s, so callers look the title up after a 500 too.
func IsTitleConflict(err error) bool {
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusBadRequest {
		return false
	}
	m := strings.ToLower(e.Message)
	return strings.Contains(m, "unique") && strings.Contains(m, "title")
}

// isAmbiguous reports whether a failed request that changes something may
// nevertheless have taken effect: a 500, 502, 503 or 504, or a connection
// that broke or timed out after the request was (perhaps) sent.
func isAmbiguous(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return ambiguousStatus(e.StatusCode)
	}
	return IsTransient(err) && !notSent(err)
}

// ambiguousStatus reports whether an answer leaves open whether the
// request took effect: a 500 (an unhandled error, possibly after the
// change was made), or a 502/503/504 from a gateway that lost or timed out
// the server's answer (proxies such as Envoy answer 503 when the upstream
// connection broke after the request was forwarded).
func ambiguousStatus(code int) bool {
	switch code {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// notSent reports whether a transport error proves the request never
// reached the server: the connection was refused or never dialled.
func notSent(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// newError builds an *Error from an answer whose body was read (capped).
func newError(method, redactedURL string, resp *http.Response, body []byte) *Error {
	e := &Error{
		Method:     method,
		URL:        redactedURL,
		StatusCode: resp.StatusCode,
		Body:       body,
		Message:    errorMessage(resp.Header.Get("Content-Type"), body),
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
	if e.Message == "" && resp.StatusCode >= 300 && resp.StatusCode < 400 {
		if loc := resp.Header.Get("Location"); loc != "" {
			e.Message = "redirect not followed" // the target may hold secrets; not shown
		}
	}
	return e
}

var (
	xmlMessage = regexp.MustCompile(`<Message>([^<]*)</Message>`)
	xmlCode    = regexp.MustCompile(`<Code>([^<]*)</Code>`)
)

// errorMessage flattens a DRF error body into one line, keeping the
// server's words: {"detail": "x"} → "x"; {"field": ["a", "b"]} → "field: a; b";
// ["x", "y"] → "x; y"; nested objects and lists keep their path
// ("values[1].non_field_errors: …"). S3 XML errors give "Code: Message".
// Other bodies are kept as trimmed text, shortened.
func errorMessage(contentType string, body []byte) string {
	b := strings.TrimSpace(string(body))
	if b == "" {
		return ""
	}
	var v any
	if (b[0] == '{' || b[0] == '[' || b[0] == '"') && json.Unmarshal([]byte(b), &v) == nil {
		if m, ok := v.(map[string]any); ok {
			if d, ok := m["detail"].(string); ok && len(m) == 1 {
				return d
			}
		}
		var parts []string
		flattenError("", v, &parts)
		return strings.Join(parts, "; ")
	}
	if strings.HasPrefix(b, "<?xml") || strings.HasPrefix(b, "<Error>") {
		code, msg := "", ""
		if m := xmlCode.FindStringSubmatch(b); m != nil {
			code = m[1]
		}
		if m := xmlMessage.FindStringSubmatch(b); m != nil {
			msg = m[1]
		}
		switch {
		case code != "" && msg != "":
			return code + ": " + msg
		case code != "" || msg != "":
			return code + msg
		}
	}
	if strings.Contains(contentType, "html") || strings.HasPrefix(b, "<") {
		return "" // an HTML error page says no more than the status
	}
	const max = 512
	if len(b) > max {
		b = b[:max] + "…"
	}
	return b
}

func flattenError(path string, v any, out *[]string) {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := k
			if path != "" {
				p = path + "." + k
			}
			flattenError(p, x[k], out)
		}
	case []any:
		var msgs []string
		for i, el := range x {
			switch el := el.(type) {
			case string:
				msgs = append(msgs, el)
			case map[string]any, []any:
				flattenError(fmt.Sprintf("%s[%d]", path, i), el, out)
			default:
				msgs = append(msgs, fmt.Sprint(el))
			}
		}
		if len(msgs) > 0 {
			s := strings.Join(msgs, "; ")
			if path != "" {
				s = path + ": " + s
			}
			*out = append(*out, s)
		}
	case nil:
	default:
		s := fmt.Sprint(x)
		if path != "" {
			s = path + ": " + s
		}
		*out = append(*out, s)
	}
}

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP date.
func parseRetryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if s, err := strconv.Atoi(h); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
