package agent

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"

	"golang.org/x/time/rate"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/ingest"
	"github.com/gcingest/gcingest/status"
)

// NewClient builds the gcapi client the way the agent uses it, for the
// commands that talk to the server too (check, plan, archives, relink):
// the user agent names version, insecure_http and ca_file are honoured,
// max_rate is shared by every part PUT. opts come after these and may
// override them (a command's own retry policy). A config that cannot give
// a client is a *ConfigError.
func NewClient(cfg *config.Config, token, version string, log *slog.Logger, opts ...gcapi.Option) (*gcapi.Client, error) {
	return buildClient(cfg, token, version, log, nil, nil, opts...)
}

// newAgentClient is NewClient for the running agent: every request is
// recorded in metrics for /metrics, and its guard's refused channel closes
// when the server refuses the token.
func newAgentClient(cfg *config.Config, token, version string, log *slog.Logger, metrics *status.Metrics, opts ...gcapi.Option) (*gcapi.Client, *authGuard, error) {
	var g *authGuard
	c, err := buildClient(cfg, token, version, log, metrics, func(rt http.RoundTripper) http.RoundTripper {
		g = newAuthGuard(rt)
		return g
	}, opts...)
	return c, g, err
}

// buildClient is NewClient with, when metrics is non-nil, every request
// recorded for /metrics, and the transport, once built, passed through wrap
// (when not nil).
func buildClient(cfg *config.Config, token, version string, log *slog.Logger, metrics *status.Metrics,
	wrap func(http.RoundTripper) http.RoundTripper, opts ...gcapi.Option) (*gcapi.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Keep a connection for every request that can be in flight at once
	// (each image's part PUTs, the confirmation lane's GETs): the default
	// of 2 idle per host closed the rest after each request, and their TLS
	// handshakes were an eighth of the agent's CPU on a backlog.
	tr.MaxIdleConnsPerHost = max(32, cfg.Upload.Concurrency*cfg.Upload.PartConcurrency+8)
	// ca_file: the system's CAs plus a private one (nil: the system's).
	pool, err := cfg.RootCAs()
	if err != nil {
		return nil, &ConfigError{err}
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
		gcapi.WithUserAgent("gcingest/" + version),
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
		return nil, &ConfigError{fmt.Errorf("grand_challenge.url: %w", err)}
	}
	return cl, nil
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

// Watches returns the ingest package's watch list from the [[watch]] tables:
// the paths cleaned, the slices and maps copies.
func Watches(cfg *config.Config) []ingest.Watch {
	out := make([]ingest.Watch, 0, len(cfg.Watch))
	for _, w := range cfg.Watch {
		w = w.Clone()
		w.Path = filepath.Clean(w.Path)
		out = append(out, ingest.Watch{Spec: w})
	}
	return out
}
