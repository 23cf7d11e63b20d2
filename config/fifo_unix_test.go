//go:build unix

package config

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestTokenFileFIFODoesNotHang(t *testing.T) {
	p := filepath.Join(t.TempDir(), "token")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Skipf("cannot make a FIFO here: %v", err)
	}
	c, _ := Parse(strings.NewReader(minimal), "t.toml")
	c.GrandChallenge.TokenFile = p
	// Nothing ever writes to the FIFO: opening it for reading blocks unless
	// the open is non-blocking and the file refused.
	_, err := tokenWithin(t, c, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "named pipe") {
		t.Fatalf("Token() error = %v; want a refusal of the named pipe", err)
	}
}
