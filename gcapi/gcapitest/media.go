package gcapitest

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// serveMedia is the protected media view: it authenticates the Bearer
// token itself and redirects to a short-lived signed URL.
func (s *Server) serveMedia(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/media/"), "/")
	f := strings.Fields(r.Header.Get("Authorization"))
	authed := len(f) == 2 && strings.EqualFold(f[0], "Bearer") && f[1] == s.opts.Token
	s.mu.Lock()
	b := s.mediaBlobLocked(parts)
	now := s.nowLocked()
	s.mu.Unlock()
	if b == nil {
		http.NotFound(w, r)
		return
	}
	if !authed {
		http.Error(w, "403 Forbidden", http.StatusForbidden)
		return
	}
	p := "/s3media/" + strings.Join(parts, "/")
	exp := strconv.FormatInt(now.Add(MediaURLExpiry).Unix(), 10)
	q := url.Values{}
	q.Set("Expires", exp)
	q.Set("Signature", s.sign("GET", p, exp))
	// A 302 to another host, like the CloudFront or S3 signed URL of
	// grand-challenge.org app/grandchallenge/serving/views.py
	// (serve_images, protected_storage_redirect).
	http.Redirect(w, r, s.StorageURL+p+"?"+q.Encode(), http.StatusFound)
}

// serveSignedMedia is the redirect target, like a CloudFront or S3 signed
// URL: a second auth mechanism (an Authorization header) is refused.
func (s *Server) serveSignedMedia(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "" {
		s3Error(w, 400, "InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified")
		return
	}
	q := r.URL.Query()
	exp := q.Get("Expires")
	want := s.sign("GET", r.URL.Path, exp)
	if q.Get("Signature") != want {
		s3Error(w, 403, "AccessDenied", "Access denied")
		return
	}
	e, _ := strconv.ParseInt(exp, 10, 64)
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/s3media/"), "/")
	s.mu.Lock()
	now := s.nowLocked()
	b := s.mediaBlobLocked(parts)
	s.mu.Unlock()
	if now.After(time.Unix(e, 0)) {
		s3Error(w, 403, "AccessDenied", "Request has expired")
		return
	}
	if b == nil {
		s3Error(w, 404, "NoSuchKey", "The specified key does not exist.")
		return
	}
	rc := b.reader()
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(b.size, 10))
	w.WriteHeader(200)
	if r.Method != http.MethodHead {
		copyTo(w, rc)
	}
}
