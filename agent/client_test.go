package agent

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gcingest/gcingest/config"
)

// TestCAFileTrustsPrivateServer talks TLS to a server whose certificate no
// system CA signed, as behind a hospital's own CA: refused without
// ca_file, trusted with it.
func TestCAFileTrustsPrivateServer(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"count":1,"next":null,"previous":null,"results":[{"pk":"a1","slug":"my-archive","title":"A","api_url":"x"}]}`)
	}))
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "hospital-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	lookup := func(t *testing.T, ca string) error {
		t.Helper()
		cfg := config.Default()
		cfg.GrandChallenge.URL = srv.URL
		cfg.GrandChallenge.CAFile = ca
		c, err := NewClient(cfg, "tok-3f9a1c2b7e4d", "test", log)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.ArchiveBySlug(context.Background(), "my-archive")
		return err
	}
	t.Run("without ca_file", func(t *testing.T) {
		if err := lookup(t, ""); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("err = %v, want a certificate error", err)
		}
	})
	t.Run("with ca_file", func(t *testing.T) {
		if err := lookup(t, caFile); err != nil {
			t.Fatalf("err = %v, want the server trusted through ca_file", err)
		}
	})
	t.Run("ca_file unreadable at start", func(t *testing.T) {
		cfg := config.Default()
		cfg.GrandChallenge.URL = srv.URL
		cfg.GrandChallenge.CAFile = filepath.Join(t.TempDir(), "gone.pem")
		_, err := NewClient(cfg, "tok-3f9a1c2b7e4d", "test", log)
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "grand_challenge.ca_file") {
			t.Fatalf("err = %v, want a *ConfigError naming grand_challenge.ca_file", err)
		}
	})
}

// TestClientKeepsItsConnections: requests in flight at once, as the upload
// workers and their parts make them, reuse their TLS connections round
// after round instead of opening (and handshaking) new ones: with the
// default of 2 idle connections per host, all but 2 were closed after
// each request.
func TestClientKeepsItsConnections(t *testing.T) {
	var mu sync.Mutex
	conns := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"count":1,"next":null,"previous":null,"results":[{"pk":"a1","slug":"my-archive","title":"A","api_url":"x"}]}`)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	srv.StartTLS()
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.GrandChallenge.URL = srv.URL
	cfg.GrandChallenge.CAFile = caFile
	c, err := NewClient(cfg, "tok-3f9a1c2b7e4d", "test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	const inFlight, rounds = 8, 10
	for range rounds {
		var wg sync.WaitGroup
		for range inFlight {
			wg.Go(func() {
				if _, err := c.ArchiveBySlug(context.Background(), "my-archive"); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	mu.Lock()
	defer mu.Unlock()
	// Kept, a round opens few or none: the first round's 8, and a few more
	// where a request's dial races a connection coming free (10-18 seen).
	// Dropped, every round opened 6 again: 62.
	if limit := 4 * inFlight; conns > limit {
		t.Errorf("%d connections opened for %d rounds of %d requests at once; want at most %d, kept between rounds", conns, rounds, inFlight, limit)
	}
}
