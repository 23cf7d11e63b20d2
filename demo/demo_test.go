package demo

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/status"
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
	opts := Options{Dir: t.TempDir(), Out: &out, Version: "test",
		NewLogger: func(cfg *config.Config, token string) *slog.Logger { return slog.New(slog.NewTextHandler(&errb, nil)) }}
	if err := Run(ctx, opts); err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "all 5 images are in the archive") {
		t.Errorf("demo output:\n%s", out.String())
	}
}

// A DICOM series is named by its folder, an image by its title without the
// hash, else by its key.
func TestDemoName(t *testing.T) {
	for _, tt := range []struct {
		im   status.Image
		want string
	}{
		{status.Image{Key: "ct-scan.mha", Title: "ct-scan.mha [3f9a]"}, "ct-scan.mha"},
		{status.Image{Key: "dicom:1.2.3|4.5.6", Files: []string{"dicom/series1/a.dcm"}}, "dicom/series1 (DICOM)"},
		{status.Image{Key: "pet.nii"}, "pet.nii"},
	} {
		if got := demoName(tt.im); got != tt.want {
			t.Errorf("demoName(%+v) = %q, want %q", tt.im, got, tt.want)
		}
	}
}
