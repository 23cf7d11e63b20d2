package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestDemoIgnoresTokenInEnvironment: a user's real token in the
// environment must not reach (and be refused by) the demo's fake server.
func TestDemoIgnoresTokenInEnvironment(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo takes seconds")
	}
	t.Setenv("GRAND_CHALLENGE_TOKEN", "x")
	t.Setenv("GRAND_CHALLENGE_AUTHORIZATION", "Bearer y")
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := runDemo(ctx, t.TempDir(), &out, &errb); err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "all 5 images are in the archive") {
		t.Errorf("demo output:\n%s", out.String())
	}
}
