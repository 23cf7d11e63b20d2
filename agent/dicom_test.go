package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/dimse"
	"github.com/gcingest/gcingest/status"
)

// freePort returns a loopback address:port free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// newDICOMConfig is newConfig with status on a free port and a [[dicom]]
// table into the drop folder.
func newDICOMConfig(t *testing.T, listen string) *config.Config {
	t.Helper()
	srv := newServer(t)
	cfg := newConfig(t, srv, "")
	cfg.Status.Listen = freePort(t)
	cfg.DICOM = []config.DICOM{{Listen: listen, AETitle: "GCINGEST", Allow: []config.DICOMCaller{{AE: "CT1", From: "127.0.0.0/8"}}, Spool: cfg.Watch[0].Path, Journal: "4MiB"}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// runAgent runs the agent of cfg until the test ends, and returns when it
// is up; stop cancels it and returns Run's error, failing the test if it
// took more than 5 seconds.
func runAgent(t *testing.T, cfg *config.Config) (stop func() error) {
	t.Helper()
	_, stop = runAgentInfo(t, cfg)
	return stop
}

// runAgentInfo is runAgent, also returning what the agent told Ready.
func runAgentInfo(t *testing.T, cfg *config.Config) (info Info, stop func() error) {
	t.Helper()
	up := make(chan Info, 1)
	a, err := New(Options{Config: cfg, Token: "good-token", Logger: slog.New(slog.DiscardHandler), Version: "test", Ready: func(i Info) { up <- i }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case info = <-up:
	case err := <-done:
		cancel()
		t.Fatalf("Run returned before the agent was up: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("agent not up after 30s")
	}
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return within 5s of the cancel")
			return nil
		}
	}
	t.Cleanup(func() { stop() })
	return info, stop
}

// startupFindings runs the whole start-up of s (check's, without Hold)
// and returns its findings.
func startupFindings(t *testing.T, s *Startup) []Finding {
	t.Helper()
	var got []Finding
	s.Note = func(f Finding) { got = append(got, f) }
	s.Run(context.Background())
	return got
}

// A running agent answers a C-ECHO on its [[dicom]] listener from an
// allowed caller, refuses one that is not allowed, counts both in status
// and /metrics, and closes the port when Run returns.
func TestRunServesDICOM(t *testing.T) {
	listen := freePort(t)
	cfg := newDICOMConfig(t, listen)
	stop := runAgent(t, cfg)

	ae, err := EchoListener(context.Background(), cfg.DICOM[0])
	if err != nil || ae != "CT1" {
		t.Fatalf("EchoListener = %q, %v; want a C-ECHO from CT1 answered", ae, err)
	}
	other := cfg.DICOM[0]
	other.Allow = []config.DICOMCaller{{AE: "CT2"}}
	var rj *dimse.RejectedError
	if _, err := EchoListener(context.Background(), other); !errors.As(err, &rj) {
		t.Errorf("C-ECHO from CT2 = %v, want a *dimse.RejectedError", err)
	}

	rep, err := status.Fetch(context.Background(), cfg.Status.Listen, status.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.DICOM) != 1 {
		t.Fatalf("status shows %d DICOM listeners, want 1", len(rep.DICOM))
	}
	l := rep.DICOM[0]
	if l.Listen != listen || l.AETitle != "GCINGEST" || l.Total != 1 || l.Refused != 1 || l.Callers["CT1"].Total != 1 || l.Callers["CT2"].Refused != 1 {
		t.Errorf("status shows %+v, want 1 association from CT1 and 1 refusal of CT2 on %s", l, listen)
	}
	resp, err := http.Get("http://" + cfg.Status.Listen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		fmt.Sprintf(`gcingest_dicom_associations_total{listen=%q,ae_title="GCINGEST"} 1`, listen),
		fmt.Sprintf(`gcingest_dicom_associations_refused_total{listen=%q,ae_title="GCINGEST"} 1`, listen),
		fmt.Sprintf(`gcingest_dicom_caller_associations_refused_total{listen=%q,calling_ae="CT2"} 1`, listen),
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	if err := stop(); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
	if c, err := net.Dial("tcp", listen); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Run returned", listen)
	}
}

// The agent up tells Ready how to read its DICOM listeners' counters,
// which the live display draws the incoming series from: the same as
// status shows, per calling AE title. Without [[dicom]] tables there is
// nothing to read.
func TestReadyReportsDICOMCounters(t *testing.T) {
	listen := freePort(t)
	info, _ := runAgentInfo(t, newDICOMConfig(t, listen))
	if info.DICOM == nil {
		t.Fatal("Info.DICOM is nil with a [[dicom]] table")
	}
	if _, err := EchoListener(context.Background(), newDICOMConfig(t, listen).DICOM[0]); err != nil {
		t.Fatal(err)
	}
	ls := info.DICOM()
	if len(ls) != 1 || ls[0].Listen != listen || ls[0].AETitle != "GCINGEST" {
		t.Fatalf("Info.DICOM() = %+v, want the listener GCINGEST on %s", ls, listen)
	}
	if got := ls[0].Callers["CT1"]; got.Total != 1 {
		t.Errorf("CT1's counters after a C-ECHO: %+v; want 1 association", got)
	}
	// The receiver ends its side of the association once the release is
	// answered, a moment after Echo returns.
	for deadline := time.Now().Add(5 * time.Second); info.DICOM()[0].Callers["CT1"].Current != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("CT1's association still open 5s after the C-ECHO: %+v", info.DICOM()[0].Callers["CT1"])
		}
	}

	plain := newConfig(t, newServer(t), "")
	if info, _ := runAgentInfo(t, plain); info.DICOM != nil {
		t.Error("Info.DICOM is set without a [[dicom]] table")
	}
}

// A DICOM port in use stops run like a busy status port (a runtime error
// the service manager retries, not a config error), and check says the
// same; a port held by this config's running agent passes check.
func TestDICOMPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := newDICOMConfig(t, ln.Addr().String())

	a, err := New(Options{Config: cfg, Token: "good-token", Logger: slog.New(slog.DiscardHandler), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	err = a.Run(context.Background())
	var ce *ConfigError
	if err == nil || !strings.Contains(err.Error(), "dicom[0].listen") || errors.As(err, &ce) {
		t.Fatalf("Run = %v, want a runtime error naming dicom[0].listen", err)
	}

	s := &Startup{Config: cfg}
	fails, _, text := levels(startupFindings(t, s))
	if fails != 1 || !strings.Contains(text, "dicom[0].listen") {
		t.Errorf("check: %d failures:\n%s\nwant one naming dicom[0].listen", fails, text)
	}
	ln.Close()

	// The config's own agent holds the port: check passes it.
	runAgent(t, cfg)
	s = &Startup{Config: cfg}
	fails, _, text = levels(startupFindings(t, s))
	if fails != 0 || !strings.Contains(text, "held by the running gcingest") {
		t.Errorf("check of a running agent's config: %d failures:\n%s", fails, text)
	}
}

// TLS files that do not load are a config error naming the key, in check
// as in run.
func TestDICOMTLSFilesMissing(t *testing.T) {
	cfg := newDICOMConfig(t, freePort(t))
	dir := t.TempDir()
	cfg.DICOM[0].TLSCert, cfg.DICOM[0].TLSKey = filepath.Join(dir, "no.crt"), filepath.Join(dir, "no.key")
	s := &Startup{Config: cfg}
	fails, _, text := levels(startupFindings(t, s))
	var ce *ConfigError
	if fails != 1 || !strings.Contains(text, "dicom[0].tls_cert") || !errors.As(s.err, &ce) {
		t.Errorf("check: %d failures:\n%s\nwant one config error naming dicom[0].tls_cert", fails, text)
	}
}

// With mutual TLS a sender must show a certificate the client CA signed:
// check --echo's, the listener's own, passes; plain TCP is not answered.
func TestDICOMMutualTLS(t *testing.T) {
	cfg := newDICOMConfig(t, freePort(t))
	cert, key := selfSigned(t)
	cfg.DICOM[0].TLSCert, cfg.DICOM[0].TLSKey, cfg.DICOM[0].TLSClientCA = cert, key, cert
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	runAgent(t, cfg)
	if ae, err := EchoListener(context.Background(), cfg.DICOM[0]); err != nil {
		t.Fatalf("C-ECHO over mutual TLS from %q: %v", ae, err)
	}
	plain := cfg.DICOM[0]
	plain.TLSCert, plain.TLSKey, plain.TLSClientCA = "", "", ""
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := EchoListener(ctx, plain); err == nil {
		t.Error("a C-ECHO over plain TCP to a TLS listener passed")
	}
}

// selfSigned writes a self-signed certificate for 127.0.0.1, usable as
// server, client and CA, and its key, as PEM files.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "gcingest test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "dicom.crt"), filepath.Join(dir, "dicom.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// SIGHUP does not restart the listeners: a reloaded config with another
// AE title in its [[dicom]] table is applied to the watches while the
// listener answers as before, and a watch list that no longer uploads the listener's spool is
// refused.
func TestReloadKeepsDICOMListeners(t *testing.T) {
	cfg := newDICOMConfig(t, freePort(t))
	r := runReloading(t, cfg)
	other := filepath.Join(t.TempDir(), "other")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	unspooled := *cfg
	unspooled.Watch = append(unspooled.Watch[:0:0], cfg.Watch...)
	unspooled.Watch[0].Path = other
	unspooled.DICOM = append(unspooled.DICOM[:0:0], cfg.DICOM...)
	unspooled.DICOM[0].Spool = other
	r.reload <- &unspooled

	changed := *cfg
	changed.DICOM = append(changed.DICOM[:0:0], cfg.DICOM...)
	changed.DICOM[0].AETitle = "OTHER"
	r.reload <- &changed // taken once the refused one was checked
	r.waitUp("reload")
	if r.restarted() {
		t.Fatal("the agent restarted twice: the watch list without the spool was applied")
	}
	if _, err := EchoListener(context.Background(), cfg.DICOM[0]); err != nil {
		t.Errorf("after the reload the listener does not answer as GCINGEST: %v", err)
	}
	r.stop()
}

// The receiver's journal lives beside the state file, whose folder the
// agent may write, not beside the spool, whose parent (/var/spool in the
// packages) is often root's: there the receiver would run without one,
// at a third of the speed.
func TestDICOMJournalBesideTheState(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the receiver journals on Linux only")
	}
	cfg := newDICOMConfig(t, freePort(t))
	stop := runAgent(t, cfg)
	defer stop()
	want := journalPath(cfg, filepath.Clean(cfg.DICOM[0].Spool))
	if filepath.Dir(want) != filepath.Dir(cfg.State.Path) {
		t.Fatalf("journal path %s is not beside the state file %s", want, cfg.State.Path)
	}
	if _, err := os.Stat(want); err != nil {
		t.Errorf("no journal beside the state file: %v", err)
	}
	beside, _ := filepath.Glob(filepath.Join(filepath.Dir(filepath.Clean(cfg.DICOM[0].Spool)), ".*dimse-journal"))
	if len(beside) > 0 {
		t.Errorf("a journal beside the spool too: %v", beside)
	}
}

// accept_unknown_classes reaches the receiver, and check says so; with a
// spool watch that de-identifies, check warns that such instances would
// fail unsent.
func TestDICOMAcceptUnknownClasses(t *testing.T) {
	cfg := newDICOMConfig(t, freePort(t))
	if dimseConfig(cfg.DICOM[0], nil, nil).AcceptUnknownSOPClasses {
		t.Error("unknown SOP classes accepted by default")
	}
	_, _, text := levels(startupFindings(t, &Startup{Config: cfg}))
	if strings.Contains(text, "accept_unknown_classes") {
		t.Errorf("check mentions accept_unknown_classes, which is off:\n%s", text)
	}

	cfg.DICOM[0].AcceptUnknownClasses = true
	if !dimseConfig(cfg.DICOM[0], nil, nil).AcceptUnknownSOPClasses {
		t.Error("accept_unknown_classes does not reach the receiver")
	}
	fails, warns, text := levels(startupFindings(t, &Startup{Config: cfg}))
	if fails != 0 || warns != 0 || !strings.Contains(text, "SOP classes it does not know accepted too (accept_unknown_classes)") {
		t.Errorf("check: %d failures, %d warnings:\n%s\nwant the listener's line to say it accepts unknown classes", fails, warns, text)
	}

	cfg.Watch[0].Deidentify = true
	_, warns, text = levels(startupFindings(t, &Startup{Config: cfg}))
	if warns != 1 || !strings.Contains(text, "dicom[0].accept_unknown_classes = true, but watch[0] de-identifies") {
		t.Errorf("check: %d warnings:\n%s\nwant one about accept_unknown_classes with deidentify", warns, text)
	}
}

// SIGHUP applies a changed allow list to the running listener (adding a
// scanner must not need a restart that cuts off senders in mid-series):
// the new caller is admitted, the one taken off is refused, and the same
// listener keeps running.
func TestReloadAppliesDICOMAllowList(t *testing.T) {
	cfg := newDICOMConfig(t, freePort(t)) // allows CT1
	r := runReloading(t, cfg)
	echo := func(calling string) error {
		t.Helper()
		conn, err := net.DialTimeout("tcp", cfg.DICOM[0].Listen, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return dimse.Echo(ctx, conn, calling, "GCINGEST")
	}
	var rj *dimse.RejectedError
	if err := echo("CT2"); !errors.As(err, &rj) {
		t.Fatalf("CT2 before the reload: %v, want refused", err)
	}

	changed := *cfg
	changed.DICOM = append(changed.DICOM[:0:0], cfg.DICOM...)
	changed.DICOM[0].Allow = []config.DICOMCaller{{AE: "CT2"}}
	r.reload <- &changed
	r.waitUp("reload")
	if err := echo("CT2"); err != nil {
		t.Errorf("CT2 after the reload admitted it: %v", err)
	}
	if err := echo("CT1"); !errors.As(err, &rj) {
		t.Errorf("CT1 after the reload took it off: %v, want refused", err)
	}
	r.stop()
}
