// Package gcapitest is an in-process fake Grand Challenge server in the
// style of net/http/httptest. It is strict like the real server on the parts
// of the API that gcingest uses (status codes, error bodies, unique item
// titles, one value per interface, multipart upload rules, quotas, expiry),
// serves presigned part URLs and media downloads itself on a second host,
// runs image imports asynchronously, and injects faults deterministically
// from a seed.
//
// Its JSON is its own, written from the real server's serializers; it
// shares no types with package gcapi, so a field the client gets wrong is
// not the same wrong field here. The server behaviours a client must
// survive are listed, with the server file each follows, in
// contract_table_test.go; their defaults are the real server's.
//
// It does not import "testing" so that the gcingest binary can embed it for
// `gcingest demo`.
package gcapitest

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Server. The zero value is usable.
type Options struct {
	Token         string        // the one valid bearer token; default "test-token"
	Seed          int64         // seeds every random choice (faults, list order); same seed, same choices
	ImportDelay   time.Duration // time an import (image build or file copy) takes on the fake clock; 0 = at once
	PresignExpiry time.Duration // presigned part URL lifetime; default 1h
	QuotaBytes    int64         // per-user byte quota checked at generate-presigned-urls; default 2 GiB
	MaxUploads    int           // create refused (400) when the user already has more than this; default 2000
	StoreDir      string        // where uploaded bytes are kept on disk; default a temp dir removed by Close
	Logger        *slog.Logger  // optional
	// StorageOnAPIHost serves presigned part URLs and the signed URLs that
	// media downloads redirect to on the API host. By default they live on
	// another host, as S3 and CloudFront do (grand-challenge.org
	// app/grandchallenge/serving/views.py protected_storage_redirect), so a
	// client that sends its token there leaks it.
	StorageOnAPIHost bool
	// Addr is the API host's address, "127.0.0.1:8000" say; default a
	// free port on 127.0.0.1. The storage host always takes a free port.
	Addr string
}

// Defaults of Options.
const (
	DefaultToken         = "test-token"
	DefaultPresignExpiry = time.Hour
	DefaultQuotaBytes    = 2 << 30
	DefaultMaxUploads    = 2000
	// UploadLifetime is how long an upload exists before the server's
	// cleanup deletes it, whatever its status.
	UploadLifetime = 24 * time.Hour
	// MediaURLExpiry is the lifetime of the signed URLs media downloads redirect to.
	MediaURLExpiry = 300 * time.Second
	// MinPartSize is S3's minimum size of every part but the last.
	MinPartSize = 5 << 20
	// MaxPartSize is S3's maximum part size.
	MaxPartSize = 5 << 30
	// userPK is the pk of the one user the valid token belongs to.
	userPK = 2
)

// Server is a fake Grand Challenge server.
type Server struct {
	// URL is the base URL, "http://127.0.0.1:port", without /api/v1.
	URL string
	// StorageURL is the base URL of the storage host that presigned part
	// URLs and media redirects point to: "http://localhost:port" (another
	// host name, so Go's http.Client drops the Authorization header on a
	// redirect there), or URL with Options.StorageOnAPIHost.
	StorageURL string

	opts     Options
	log      *slog.Logger
	listener net.Listener
	hs       *http.Server
	storeL   net.Listener // the storage host's listener; nil with StorageOnAPIHost
	storeHS  *http.Server
	handler  http.Handler
	ownStore bool
	signKey  []byte

	closing   chan struct{} // closed by Close: stops the worker and stalls
	wake      chan struct{} // pokes the worker
	wg        sync.WaitGroup
	closeOnce sync.Once
	startOnce sync.Once

	// rmu guards the random sources; faults and list order use separate
	// sources so that the fault sequence depends only on the requests the
	// faults apply to.
	rmu       sync.Mutex
	faultRand *mrand.Rand
	orderRand *mrand.Rand
	faults    Faults

	stalling atomic.Int32 // requests stalled by a fault right now

	// hmu guards closed and the Add side of handlers, so that Close can
	// wait for every handler (http.Server.Close does not).
	hmu      sync.Mutex
	closed   bool
	handlers sync.WaitGroup

	mu    sync.Mutex // guards everything below
	st    state
	reqs  []Request
	stats Stats
}

// NewServer starts a fake server listening on opts.Addr, by default on a
// random port of 127.0.0.1.
func NewServer(opts Options) *Server {
	s := NewUnstartedServer(opts)
	s.Start()
	return s
}

// NewUnstartedServer returns a server that listens but does not serve until
// Start. Its URL is already set, so setup can build api_urls.
func NewUnstartedServer(opts Options) *Server {
	if opts.Token == "" {
		opts.Token = DefaultToken
	}
	if opts.PresignExpiry <= 0 {
		opts.PresignExpiry = DefaultPresignExpiry
	}
	if opts.QuotaBytes <= 0 {
		opts.QuotaBytes = DefaultQuotaBytes
	}
	if opts.MaxUploads <= 0 {
		opts.MaxUploads = DefaultMaxUploads
	}
	s := &Server{
		opts:    opts,
		log:     opts.Logger,
		closing: make(chan struct{}),
		wake:    make(chan struct{}, 1),
		signKey: make([]byte, 32),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	rand.Read(s.signKey)
	seed := uint64(opts.Seed)
	s.faultRand = mrand.New(mrand.NewPCG(seed, 0x9e3779b97f4a7c15))
	s.orderRand = mrand.New(mrand.NewPCG(seed, 0x632be59bd9b4e019))
	if opts.StoreDir == "" {
		dir, err := os.MkdirTemp("", "gcapitest-")
		if err != nil {
			panic(fmt.Sprintf("gcapitest: create store dir: %v", err))
		}
		s.opts.StoreDir = dir
		s.ownStore = true
	}
	for _, d := range []string{"uploads", "images", "files", "tmp"} {
		if err := os.MkdirAll(filepath.Join(s.opts.StoreDir, d), 0o755); err != nil {
			panic(fmt.Sprintf("gcapitest: create store dir: %v", err))
		}
	}
	s.st = newState(s.orderRand)
	s.handler = http.HandlerFunc(s.serveTracked)
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		panic(fmt.Sprintf("gcapitest: listen on %s: %v", addr, err))
	}
	s.listener = l
	s.URL = "http://" + l.Addr().String()
	s.StorageURL = s.URL
	s.hs = &http.Server{Handler: s.handler, ReadHeaderTimeout: 30 * time.Second}
	if !opts.StorageOnAPIHost {
		sl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			l.Close()
			panic(fmt.Sprintf("gcapitest: listen on 127.0.0.1: %v", err))
		}
		s.storeL = sl
		s.StorageURL = fmt.Sprintf("http://localhost:%d", sl.Addr().(*net.TCPAddr).Port)
		s.storeHS = &http.Server{Handler: http.HandlerFunc(s.serveStorageTracked), ReadHeaderTimeout: 30 * time.Second}
	}
	return s
}

// Start starts serving and the background worker (imports, expiry).
func (s *Server) Start() {
	s.startOnce.Do(func() {
		s.wg.Add(2)
		go func() {
			defer s.wg.Done()
			s.hs.Serve(s.listener)
		}()
		if s.storeHS != nil {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.storeHS.Serve(s.storeL)
			}()
		}
		go func() {
			defer s.wg.Done()
			s.worker()
		}()
	})
}

// Close stops serving, stops the worker, waits for both, and removes the
// store directory if the server made it.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.hmu.Lock()
		s.closed = true
		s.hmu.Unlock()
		close(s.closing)
		s.hs.Close()
		if s.storeHS != nil {
			s.storeHS.Close()
		}
		s.handlers.Wait()
		// Start may never have been called; then the listeners are still ours.
		s.listener.Close()
		if s.storeL != nil {
			s.storeL.Close()
		}
		s.wg.Wait()
		if s.ownStore {
			os.RemoveAll(s.opts.StoreDir)
		}
	})
}

// Client returns an HTTP client for the server. It does not follow
// redirects on its own any differently from http.DefaultClient.
func (s *Server) Client() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: 64,
	}}
}

// Token returns the one valid bearer token.
func (s *Server) Token() string { return s.opts.Token }

// Advance moves the fake clock forward: upload expiry, presigned URL expiry
// and import delays all read it.
func (s *Server) Advance(d time.Duration) {
	s.mu.Lock()
	s.st.offset += d
	s.expireLocked()
	s.mu.Unlock()
	s.poke()
}

// Now returns the fake clock's time.
func (s *Server) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nowLocked()
}

func (s *Server) nowLocked() time.Time { return time.Now().Add(s.st.offset) }

func (s *Server) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// copyTo is io.CopyBuffer with a modest buffer, so big bodies stream.
// The buffers are reused: a benchmark's agent shares the machine with the
// fake, and a fresh 256 KiB per upload part is garbage it would pay for.
func copyTo(w io.Writer, r io.Reader) (int64, error) {
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	return io.CopyBuffer(w, r, *buf)
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// storageKey marks a request that came in on the storage host.
type storageKey struct{}

func (s *Server) serveStorageTracked(w http.ResponseWriter, r *http.Request) {
	s.serveTracked(w, r.WithContext(context.WithValue(r.Context(), storageKey{}, true)))
}

// onStorageHost reports whether r came to the storage host.
func onStorageHost(r *http.Request) bool {
	v, _ := r.Context().Value(storageKey{}).(bool)
	return v
}

// serveTracked counts the handler in, so Close can wait for it.
func (s *Server) serveTracked(w http.ResponseWriter, r *http.Request) {
	s.hmu.Lock()
	if s.closed {
		s.hmu.Unlock()
		http.Error(w, "server closed", http.StatusServiceUnavailable)
		return
	}
	s.handlers.Add(1)
	s.hmu.Unlock()
	defer s.handlers.Done()
	s.serveHTTP(w, r)
}
