package demo

import (
	"bytes"
	"context"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestServe: what demo --serve prints is enough for a client to find the
// archive and every socket it names, and Ctrl-C stops it.
func TestServe(t *testing.T) {
	out := &lockedBuffer{}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ServeOptions{Addr: "127.0.0.1:0", Out: out}) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "serving until Ctrl-C") {
		if time.Now().After(deadline) {
			t.Fatalf("demo --serve printed only:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
	url := regexp.MustCompile(`fake Grand Challenge at (\S+)`).FindStringSubmatch(out.String())
	tok := regexp.MustCompile(`(?m)^token:\s+(\S+)`).FindStringSubmatch(out.String())
	if url == nil || tok == nil {
		t.Fatalf("no URL or token in:\n%s", out.String())
	}
	c, err := gcapi.New(url[1], tok[1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ArchiveBySlug(t.Context(), demoArchive); err != nil {
		t.Errorf("archive %s: %v", demoArchive, err)
	}
	for _, s := range serveSockets {
		it, err := c.InterfaceBySlug(t.Context(), s.slug)
		if err != nil || it.Kind != s.kind {
			t.Errorf("socket %s: %+v, %v; want kind %s", s.slug, it, err, s.kind)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after Ctrl-C = %v; want nil", err)
	}
}

// A busy port is an error naming it, not a panic.
func TestServeBusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = Serve(t.Context(), ServeOptions{Addr: ln.Addr().String(), Out: &bytes.Buffer{}})
	if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Errorf("Serve on a busy port = %v; want an error naming it", err)
	}
}
