package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// tokenWithin calls Token and fails the test if it has not returned by the
// deadline: a hang detector, not a speed claim.
func tokenWithin(t *testing.T, c *Config, d time.Duration) (string, error) {
	t.Helper()
	type res struct {
		tok string
		err error
	}
	done := make(chan res, 1)
	go func() {
		tok, _, err := c.Token(func(string) string { return "" })
		done <- res{tok, err}
	}()
	select {
	case r := <-done:
		return r.tok, r.err
	case <-time.After(d):
		t.Fatalf("Token() still reading after %s", d)
		return "", nil
	}
}

func TestTokenFileMustBeSmallRegularFile(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, []byte(strings.Repeat("x", maxTokenFile+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
	}{
		{"a directory", dir, "not a regular file"},
		{"larger than 64 KiB", big, "more than the 64 KiB"},
		{"missing", filepath.Join(dir, "nope"), "no such file"},
	}
	if runtime.GOOS != "windows" {
		tests = append(tests, struct{ name, path, want string }{"/dev/zero", "/dev/zero", "not a regular file"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := Parse(strings.NewReader(minimal), "t.toml")
			c.GrandChallenge.TokenFile = tt.path
			tok, err := tokenWithin(t, c, 10*time.Second)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "grand_challenge.token_file") {
				t.Fatalf("Token() = %d bytes, %v; want an error naming grand_challenge.token_file and saying %q", len(tok), err, tt.want)
			}
		})
	}
	t.Run("a small regular file", func(t *testing.T) {
		p := filepath.Join(dir, "token")
		if err := os.WriteFile(p, []byte("  Bearer abc123\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c, _ := Parse(strings.NewReader(minimal), "t.toml")
		c.GrandChallenge.TokenFile = p
		if tok, err := tokenWithin(t, c, 10*time.Second); err != nil || tok != "abc123" {
			t.Fatalf("Token() = %q, %v; want abc123", tok, err)
		}
	})
}

func TestURLErrorsHideUserInfo(t *testing.T) {
	const secret = "TOKEN-3f9a1c2b7e4d"
	for _, u := range []string{
		"https://user:" + secret + "@gc.example.org",
		"https://" + secret + "@gc.example.org/",
		"http://user:" + secret + "@gc.example.org",
		"https://user:" + secret + "@gc example.org/",
		"ftp://user:" + secret + "@gc.example.org/",
	} {
		c, _ := Parse(strings.NewReader(minimal), "t.toml")
		c.GrandChallenge.URL = u
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "grand_challenge.url:") {
			t.Errorf("url %s: got %v, want an error for grand_challenge.url", u, err)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows the token: %v", err)
		}
		c.GrandChallenge.InsecureHTTP = true
		for _, w := range c.Warnings() {
			if strings.Contains(w, secret) {
				t.Errorf("a warning shows the token: %s", w)
			}
		}
	}
}

// writeCA writes a fresh self-signed CA certificate as PEM and returns its
// path and certificate.
func writeCA(t *testing.T) (string, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Hospital Test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p, cert
}

func TestCAFile(t *testing.T) {
	good, cert := writeCA(t)
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	badPEM := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(badPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("garbage")}), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, path, want string }{
		{"relative", "ca.pem", "relative path"},
		{"missing", filepath.Join(dir, "nope.pem"), "no such file"},
		{"not PEM", notPEM, "no PEM certificate"},
		{"broken certificate", badPEM, "certificate 1"},
		{"a directory", dir, "not a regular file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := Parse(strings.NewReader(minimal), "t.toml")
			c.GrandChallenge.CAFile = tt.path
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), "grand_challenge.ca_file:") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error for grand_challenge.ca_file saying %q", err, tt.want)
			}
		})
	}
	t.Run("parsed and added to the system's", func(t *testing.T) {
		c, err := Parse(strings.NewReader("[grand_challenge]\nca_file = \""+filepath.ToSlash(good)+"\"\n"+minimal), "t.toml")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		pool, err := c.RootCAs()
		if err != nil || pool == nil {
			t.Fatalf("RootCAs() = %v, %v; want a pool", pool, err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
			t.Errorf("the CA from ca_file is not trusted by the pool: %v", err)
		}
	})
	t.Run("unset: the system's", func(t *testing.T) {
		c, _ := Parse(strings.NewReader(minimal), "t.toml")
		if pool, err := c.RootCAs(); pool != nil || err != nil {
			t.Errorf("RootCAs() = %v, %v; want nil, nil (the transport's default)", pool, err)
		}
	})
}
