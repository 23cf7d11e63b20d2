package gcapi_test

import (
	"context"
	"testing"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

func TestCanUploadCreatesNothing(t *testing.T) {
	s := gcapitest.NewServer(gcapitest.Options{Seed: 1})
	t.Cleanup(s.Close)
	c, err := gcapi.New(s.URL, s.Token())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		access gcapitest.Access
		want   bool
	}{
		{gcapitest.AccessUpload, true},
		{gcapitest.AccessView, false},
		{gcapitest.AccessPublic, false},
	} {
		slug := map[gcapitest.Access]string{gcapitest.AccessUpload: "upload", gcapitest.AccessView: "view", gcapitest.AccessPublic: "public"}[tc.access]
		t.Run(slug, func(t *testing.T) {
			ar := s.AddArchiveAccess(slug, slug, tc.access)
			got, err := c.CanUpload(ctx, ar.APIURL)
			if err != nil {
				t.Fatalf("CanUpload: %v", err)
			}
			if got != tc.want {
				t.Errorf("CanUpload = %v, want %v", got, tc.want)
			}
			if n := len(s.Items(slug)); n != 0 {
				t.Errorf("the probe left %d items in the archive", n)
			}
		})
	}
}
