package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/dimse"
	"github.com/gcingest/gcingest/status"
)

// DICOMTLS returns the TLS configuration of listener d, nil for plain
// TCP. The certificate and key must load as a pair, and the client CA file
// hold at least one certificate; an error names the key.
func DICOMTLS(d config.DICOM) (*tls.Config, error) {
	if !d.TLS() {
		return nil, nil
	}
	pair, err := tls.LoadX509KeyPair(d.TLSCert, d.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("tls_cert %s and tls_key %s: load the certificate and its key: %w", d.TLSCert, d.TLSKey, err)
	}
	// TLS 1.2 or later, as BCP 195 (which PS3.15 Annex B.9 profiles and
	// dcmtk follows by default) asks.
	tc := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if d.TLSClientCA != "" {
		b, err := os.ReadFile(d.TLSClientCA)
		if err != nil {
			return nil, fmt.Errorf("tls_client_ca: read %s: %w", d.TLSClientCA, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("tls_client_ca: %s holds no PEM certificate (-----BEGIN CERTIFICATE-----)", d.TLSClientCA)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// dimseConfig is the receiver's configuration of listener d.
func dimseConfig(d config.DICOM, store dimse.Store, log *slog.Logger) dimse.Config {
	return dimse.Config{AETitle: d.AETitle, Allow: dimseCallers(d), MaxAssociations: d.MaxAssociations, AcceptUnknownSOPClasses: d.AcceptUnknownClasses, Store: store, Logger: log}
}

// dimseCallers is table d's allow list as the receiver takes it.
func dimseCallers(d config.DICOM) []dimse.Caller {
	allow := make([]dimse.Caller, len(d.Allow))
	for i, a := range d.Allow {
		allow[i] = dimse.Caller{AETitle: a.AE, Network: a.Network()}
	}
	return allow
}

// reloadDICOM is what a reload may change of the running listeners: the
// allow list of each table still on the same address (adding a scanner
// must not cut off the senders in mid-series that a restart would). It
// returns the tables as they will run, and whether nc changed anything
// else, which waits for a restart.
func reloadDICOM(cur, nc []config.DICOM) (next []config.DICOM, restart bool) {
	next = slices.Clone(cur)
	if len(cur) != len(nc) {
		return next, true
	}
	for i := range cur {
		if cur[i].Listen != nc[i].Listen {
			restart = true
			continue
		}
		a, b := cur[i], nc[i]
		a.Allow, b.Allow = nil, nil
		if !reflect.DeepEqual(a, b) {
			restart = true
		}
		next[i].Allow = nc[i].Allow
	}
	return next, restart
}

// applyAllow gives each running listener the allow list of its table in
// tables (as reloadDICOM returned them) where it changed from cur's.
func applyAllow(nodes []*dicomNode, cur, tables []config.DICOM, log *slog.Logger) {
	for i, n := range nodes {
		if i >= len(tables) || i >= len(cur) || reflect.DeepEqual(cur[i].Allow, tables[i].Allow) {
			continue
		}
		if err := n.srv.SetAllow(dimseCallers(tables[i])); err != nil {
			// Validate passed the same list: not expected.
			log.Error("SIGHUP: the new allow list is refused; keeping the running one", "listen", n.cfg.Listen, "err", err)
			continue
		}
		if len(tables[i].Allow) == 0 {
			log.Warn("SIGHUP: the DICOM listener's allow list is now empty: it refuses every caller", "listen", n.cfg.Listen)
			continue
		}
		log.Info("SIGHUP: the DICOM listener's new allow list is in force for new associations", "listen", n.cfg.Listen, "callers", len(tables[i].Allow))
	}
}

// checkDICOM checks each [[dicom]] table: its TLS files load, and its port
// can be bound (with Hold the listener is kept for the agent). A port in
// use fails as the status port does: a runtime error the service manager
// retries; without Hold, a port of this config's running agent passes.
func (s *Startup) checkDICOM(context.Context) {
	s.dicom = make([]net.Listener, len(s.Config.DICOM))
	for i, d := range s.Config.DICOM {
		key := fmt.Sprintf("dicom[%d]", i)
		tc, err := DICOMTLS(d)
		if err != nil {
			s.failConfig("%s.%w", key, err)
			continue
		}
		ln, err := net.Listen("tcp", d.Listen)
		switch {
		case err == nil:
		case !s.Hold && s.running && errors.Is(err, syscall.EADDRINUSE):
			s.ok("%s.listen %s: held by the running gcingest of this config (check --echo tests it end to end)", key, d.Listen)
			continue
		case errors.Is(err, syscall.EADDRINUSE):
			s.fail(fmt.Errorf("%s.listen %s: port already in use (another DICOM node, or another gcingest?): %w; "+
				"exiting so that the service manager starts gcingest again once the port is free", key, d.Listen, err))
			continue
		case errors.Is(err, syscall.EACCES):
			s.failConfig("%s.listen %s: %w; a port below 1024 needs root or the capability CAP_NET_BIND_SERVICE: use 11112, or grant it", key, d.Listen, err)
			continue
		default:
			s.failConfig("%s.listen %s: %w", key, d.Listen, err)
			continue
		}
		how := "plain TCP"
		if tc != nil {
			how = "TLS"
			if tc.ClientCAs != nil {
				how = "mutual TLS"
			}
			ln = tls.NewListener(ln, tc)
		}
		if s.Hold {
			s.dicom[i] = ln
		} else {
			ln.Close()
		}
		if d.AcceptUnknownClasses {
			how += ", SOP classes it does not know accepted too (accept_unknown_classes)"
		}
		s.ok("%s.listen %s: free; AE title %q, %s, %d allowed callers, into watch[%d] %s", key, d.Listen, d.AETitle, how, len(d.Allow), s.Config.SpoolWatch(d), d.Spool)
	}
}

// dicomNode is one running [[dicom]] listener.
type dicomNode struct {
	cfg config.DICOM
	srv *dimse.Server
}

// journalPath is where the receiver's journal for the spool folder dir
// lives: beside the state file, whose folder the agent must be able to
// write (the start-up checks it), where the spool's parent folder often
// is root's (/var/spool). Named by the spool's path, so that a journal is
// only ever replayed into the spool it was written for.
func journalPath(cfg *config.Config, dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return filepath.Join(filepath.Dir(cfg.State.Path), "dicom-"+hex.EncodeToString(sum[:6])+".journal")
}

// serveDICOM starts a receiver on each listener of lns (one per [[dicom]]
// table of cfg, opened by the start-up), writing into the spool folders,
// one SpoolStore per folder so that listeners sharing one store a
// duplicate once. It returns the nodes, for status, and stop, which ends
// every association and waits for every goroutine it started.
func serveDICOM(ctx context.Context, cfg *config.Config, lns []net.Listener, log *slog.Logger) (nodes []*dicomNode, stop func(), err error) {
	stores := map[string]*dimse.SpoolStore{}
	for i, d := range cfg.DICOM {
		dir := filepath.Clean(d.Spool)
		store := stores[dir]
		if store == nil {
			if store, err = dimse.NewSpoolStore(dir, log.With("part", "dicom", "spool", dir), dimse.WithJournal(journalPath(cfg, dir), d.JournalBytes())); err != nil {
				return nil, nil, fmt.Errorf("dicom[%d].spool: %w", i, err)
			}
			stores[dir] = store
		}
		srv, err := dimse.NewServer(dimseConfig(d, store, log.With("part", "dicom", "listen", d.Listen)))
		if err != nil {
			return nil, nil, &ConfigError{fmt.Errorf("dicom[%d]: %w", i, err)}
		}
		nodes = append(nodes, &dicomNode{cfg: d, srv: srv})
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.srv.Serve(ctx, lns[i]); err != nil {
				log.Error("dicom listener stopped; senders are refused until gcingest restarts", "listen", n.cfg.Listen, "err", err)
			}
		}()
	}
	return nodes, func() { cancel(); wg.Wait() }, nil
}

// dicomListeners reports the nodes' counters for status and /metrics.
func dicomListeners(nodes []*dicomNode) []status.Listener {
	out := make([]status.Listener, 0, len(nodes))
	for _, n := range nodes {
		st := n.srv.Stats()
		l := status.Listener{Listen: n.cfg.Listen, AETitle: n.cfg.AETitle, TLS: n.cfg.TLS(), Spool: n.cfg.Spool, ListenerCounts: listenerCounts(st)}
		if by := n.srv.StatsByCaller(); len(by) > 0 {
			l.Callers = make(map[string]status.ListenerCounts, len(by))
			for ae, st := range by {
				l.Callers[ae] = listenerCounts(st)
			}
		}
		out = append(out, l)
	}
	return out
}

func listenerCounts(st dimse.Stats) status.ListenerCounts {
	return status.ListenerCounts{Current: st.Current, Total: st.Total, Refused: st.Refused, Instances: st.Instances, Bytes: st.Bytes}
}

// echoTimeout bounds one C-ECHO of EchoListener.
const echoTimeout = 10 * time.Second

// EchoListener verifies the running listener of table d end to end, as a
// sender would: it connects (over TLS when d says so), requests an
// association for Verification and sends a C-ECHO. It calls as the first
// AE title of the allow list whose entry admits this host, so that a pass
// proves the allow list admits someone here; it returns that calling AE
// title, and a refusal as an error wrapping a *dimse.RejectedError.
//
// Over TLS it checks that the listener shows the certificate of tls_cert
// (the host name is not checked: the listener may be addressed by any);
// with mutual TLS it shows that same certificate as the client's, which
// passes when tls_client_ca signed it.
func EchoListener(ctx context.Context, d config.DICOM) (callingAE string, err error) {
	host, port, err := net.SplitHostPort(d.Listen)
	if err != nil {
		return "", fmt.Errorf("dicom listen %q: %w", d.Listen, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::", "[::]":
		host = "::1"
	}
	addr := net.JoinHostPort(host, port)
	callingAE = echoCallingAE(d, host)
	ctx, cancel := context.WithTimeout(ctx, echoTimeout)
	defer cancel()
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return callingAE, fmt.Errorf("connect to %s: %w", addr, err)
	}
	tc, err := DICOMTLS(d)
	if err != nil {
		conn.Close()
		return callingAE, err
	}
	if tc != nil {
		own := tc.Certificates[0].Certificate[0]
		client := &tls.Config{
			MinVersion: tls.VersionTLS12,
			// The listener's own certificate is the one to find there;
			// its name need not be the address dialled.
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, own) {
					return fmt.Errorf("the listener at %s does not show the certificate of tls_cert %s", addr, d.TLSCert)
				}
				return nil
			},
		}
		if tc.ClientCAs != nil {
			client.Certificates = tc.Certificates
		}
		tconn := tls.Client(conn, client)
		if err := tconn.HandshakeContext(ctx); err != nil {
			conn.Close()
			return callingAE, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		conn = tconn
	}
	if err := dimse.Echo(ctx, conn, callingAE, d.AETitle); err != nil {
		return callingAE, fmt.Errorf("%s: %w", addr, err)
	}
	return callingAE, nil
}

// echoCheckAE calls when no allow entry names an AE title for this host.
const echoCheckAE = "GCINGEST-CHECK"

// echoCallingAE picks the calling AE title of an allow entry that admits
// a connection from host (the address dialled: the source address of a
// connection to oneself).
func echoCallingAE(d config.DICOM, host string) string {
	src, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil {
		src = netip.MustParseAddr("127.0.0.1")
	}
	fallback := ""
	for _, a := range d.Allow {
		if n := a.Network(); n.IsValid() && !n.Contains(src.Unmap()) {
			continue
		}
		if a.AE != "" {
			return a.AE
		}
		fallback = echoCheckAE
	}
	if fallback == "" {
		// No entry admits this host: the echo shows the refusal.
		return echoCheckAE
	}
	return fallback
}
