package dimse

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStorescuTLS: Serve takes any listener, so a TLS listener gives DICOM
// over TLS (PS3.15 Annex B); here with mutual authentication, as dcmtk's
// storescu +tls does it: the server requires a client certificate from its
// CA.
func TestStorescuTLS(t *testing.T) {
	needDCMTK(t)
	dir := t.TempDir()
	ca, caKey := newCert(t, dir, "ca", nil, nil)
	newCert(t, dir, "server", ca, caKey)
	newCert(t, dir, "client", ca, caKey)
	pool := x509.NewCertPool()
	pool.AddCert(ca)

	ts := startServerOn(t, nil, func(ln net.Listener) net.Listener {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"))
		if err != nil {
			t.Fatal(err)
		}
		return tls.NewListener(ln, &tls.Config{
			Certificates: []tls.Certificate{pair},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
			MinVersion:   tls.VersionTLS12,
		})
	})
	insts := series("70", 5, 1024)
	_, files := writeFiles(t, insts)
	tlsArgs := []string{"+tls", filepath.Join(dir, "client.key"), filepath.Join(dir, "client.crt"), "+cf", filepath.Join(dir, "ca.crt")}
	if out, err := ts.storescu(t, "SCANNER", tlsArgs, files...); err != nil {
		t.Fatalf("storescu +tls: %v\n%s", err, out)
	}
	checkStored(t, ts, "SCANNER", insts, ExplicitVRLittleEndian)

	// Without a client certificate the handshake fails: nothing stored,
	// and no association counted.
	out, err := ts.storescu(t, "SCANNER", []string{"+tla", "+cf", filepath.Join(dir, "ca.crt")}, files[0])
	if err == nil && !strings.Contains(out, "Association Request Failed") {
		t.Errorf("storescu without a client certificate succeeded:\n%s", out)
	}
	if got := ts.Stats().Total; got != 1 {
		t.Errorf("%d associations, want only the authenticated one", got)
	}
}

// newCert writes name.crt and name.key (PEM) into dir: a CA when parent is
// nil, else a certificate for 127.0.0.1 signed by it.
func newCert(t *testing.T, dir, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "gcingest test " + name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		parent, parentKey = tmpl, key
	} else {
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(file, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(name+".crt", "CERTIFICATE", der)
	write(name+".key", "PRIVATE KEY", kb)
	return cert, key
}
