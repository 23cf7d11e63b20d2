package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/ingest"
	"github.com/gcingest/gcingest/status"
)

// token resolves the API token; no token is a config error.
func (c *cli) token(cfg *config.Config) (string, error) {
	tok, _, err := cfg.Token(c.getenv)
	if err != nil {
		return "", &configError{err}
	}
	return tok, nil
}

// newLogger builds the logger from [log]: text for a terminal, JSON when
// configured. Whatever handler, the token is scrubbed from every message
// and attribute as a last line of defence: no code should log it, and a
// server echoing a header back must not put it in the journal either.
func newLogger(cfg *config.Config, w io.Writer, token string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: logLevel(cfg.Log.Level)}
	var h slog.Handler
	if cfg.Log.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(redact(h, token))
}

func logLevel(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// authGuard notices the first 401 the API answers a request that carried
// the token. The pipeline keeps an image refused with a 401 in retrying
// (the token is the operator's to fix, not the image's), so without this
// a revoked or expired token mid-run would retry every image for ever;
// the agent instead stops on it, with exit code 3 and the hint.
type authGuard struct {
	next    http.RoundTripper
	once    sync.Once
	refused chan struct{} // closed at the first 401
	err     error         // set before refused is closed; wraps gcapi.ErrUnauthorized
}

func newAuthGuard(next http.RoundTripper) *authGuard {
	return &authGuard{next: next, refused: make(chan struct{})}
}

func (g *authGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	// Whether the request carried the token is read before sending: the
	// transport may not be handed the header back afterwards.
	withToken := req.Header.Get("Authorization") != ""
	resp, err := g.next.RoundTrip(req)
	if err == nil && withToken && resp.StatusCode == http.StatusUnauthorized {
		g.once.Do(func() {
			g.err = fmt.Errorf("%s %s%s: %w", req.Method, req.URL.Host, req.URL.Path, gcapi.ErrUnauthorized)
			close(g.refused)
		})
	}
	return resp, err
}

// Err returns the refusal once the guard saw one, else nil.
func (g *authGuard) Err() error {
	select {
	case <-g.refused:
		return g.err
	default:
		return nil
	}
}

// newAgentClient is newAPIClient for the running agent: its guard's
// refused channel closes when the server refuses the token.
func newAgentClient(cfg *config.Config, token string, log *slog.Logger, metrics *status.Metrics) (*gcapi.Client, *authGuard, error) {
	var g *authGuard
	c, err := buildAPIClient(cfg, token, log, metrics, func(rt http.RoundTripper) http.RoundTripper {
		g = newAuthGuard(rt)
		return g
	})
	return c, g, err
}

// newAPIClient builds the gcapi client the way the agent and check use it:
// user agent with the version, insecure_http and ca_file honoured, max_rate shared by
// every part PUT, and, when metrics is non-nil, every request recorded for
// /metrics.
func newAPIClient(cfg *config.Config, token string, log *slog.Logger, metrics *status.Metrics, opts ...gcapi.Option) (*gcapi.Client, error) {
	return buildAPIClient(cfg, token, log, metrics, nil, opts...)
}

// buildAPIClient is newAPIClient with the transport, once built, passed
// through wrap (when not nil).
func buildAPIClient(cfg *config.Config, token string, log *slog.Logger, metrics *status.Metrics,
	wrap func(http.RoundTripper) http.RoundTripper, opts ...gcapi.Option) (*gcapi.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// ca_file: the system's CAs plus a private one (nil: the system's).
	pool, err := cfg.RootCAs()
	if err != nil {
		return nil, &configError{err}
	}
	if pool != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	var rt http.RoundTripper = tr
	if metrics != nil {
		rt = metrics.InstrumentTransport(rt)
	}
	if wrap != nil {
		rt = wrap(rt)
	}
	all := []gcapi.Option{
		gcapi.WithHTTPClient(&http.Client{Transport: rt}),
		gcapi.WithLogger(log),
		gcapi.WithUserAgent("gcingest/" + versionString()),
	}
	if cfg.GrandChallenge.InsecureHTTP {
		all = append(all, gcapi.WithInsecureHTTP())
	}
	if n := cfg.MaxRateBytes(); n > 0 {
		burst := int(min(n, 1<<20))
		all = append(all, gcapi.WithRateLimit(rate.NewLimiter(rate.Limit(n), burst)))
	}
	cl, err := gcapi.New(cfg.GrandChallenge.URL, token, append(all, opts...)...)
	if err != nil {
		return nil, &configError{fmt.Errorf("grand_challenge.url: %w", err)}
	}
	return cl, nil
}

// redactHandler replaces the secret in messages and string attributes.
type redactHandler struct {
	h      slog.Handler
	secret string
}

func redact(h slog.Handler, secret string) slog.Handler {
	if len(secret) < 4 { // nothing sensible to scrub; avoids mangling every "a"
		return h
	}
	return &redactHandler{h: h, secret: secret}
}

func (r *redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return r.h.Enabled(ctx, l) }

func (r *redactHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, r.scrub(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(r.attr(a))
		return true
	})
	return r.h.Handle(ctx, out)
}

func (r *redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	scrubbed := make([]slog.Attr, len(as))
	for i, a := range as {
		scrubbed[i] = r.attr(a)
	}
	return &redactHandler{h: r.h.WithAttrs(scrubbed), secret: r.secret}
}

func (r *redactHandler) WithGroup(name string) slog.Handler {
	return &redactHandler{h: r.h.WithGroup(name), secret: r.secret}
}

func (r *redactHandler) scrub(s string) string { return strings.ReplaceAll(s, r.secret, "[token]") }

func (r *redactHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, r.scrub(v.String()))
	case slog.KindGroup:
		as := v.Group()
		out := make([]slog.Attr, len(as))
		for i, g := range as {
			out[i] = r.attr(g)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(out...)}
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, r.scrub(err.Error()))
		}
		return slog.String(a.Key, r.scrub(v.String()))
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// isAuth reports whether err is the server refusing the token.
func isAuth(err error) bool { return errors.Is(err, gcapi.ErrUnauthorized) }

// watches builds the ingest package's watch list from the [[watch]] tables
// (config stays a leaf package: it knows nothing of ingest).
func watches(cfg *config.Config) []ingest.Watch {
	out := make([]ingest.Watch, 0, len(cfg.Watch))
	for _, w := range cfg.Watch {
		out = append(out, ingest.Watch{
			Path:           filepath.Clean(w.Path),
			Archive:        w.Archive,
			Interface:      w.Interface,
			Group:          w.Group,
			Settle:         time.Duration(w.Settle),
			DICOMSettle:    time.Duration(w.DICOMSettle),
			IncompleteWait: time.Duration(w.IncompleteWait),
			Deidentify:     w.Deidentify,
			Rescan:         time.Duration(w.Rescan),
			Poll:           w.Poll,
			Exclude:        slices.Clone(w.Exclude),
			AfterUpload:    w.AfterUpload,
			DoneDir:        w.DoneDir,
			FailedDir:      w.FailedDir,
			Replace:        w.Replace,
			Title:          w.Title,
			Values:         maps.Clone(w.Values),
		})
	}
	return out
}
