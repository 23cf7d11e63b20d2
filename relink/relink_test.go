package relink

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

func ptr(s string) *string { return &s }

func TestPlan(t *testing.T) {
	item := func(from, to *string) gcapi.ArchiveItem {
		it := gcapi.ArchiveItem{PK: "i1"}
		if from != nil {
			it.Values = append(it.Values, gcapi.ItemValue{Interface: gcapi.Interface{Slug: "a"}, Image: from})
		}
		if to != nil {
			it.Values = append(it.Values, gcapi.ItemValue{Interface: gcapi.Interface{Slug: "b"}, Image: to})
		}
		return it
	}
	img, other := "https://gc/api/v1/cases/images/11/", "https://gc/api/v1/cases/images/22/"
	tests := []struct {
		name     string
		it       gcapi.ArchiveItem
		action   string
		wantsImg string
	}{
		{"nothing under from", item(nil, nil), "skip: no image under a", ""},
		{"empty image under from", item(ptr(""), nil), "skip: no image under a", ""},
		{"to empty", item(&img, nil), "attach", img},
		{"to holds the same image", item(&img, &img), "done already", img},
		{"to holds another image", item(&img, &other), "skip: b holds another image (22)", img},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := plan(tt.it, "a", "b")
			if st.action != tt.action || st.image != tt.wantsImg {
				t.Errorf("got action %q image %q, want %q %q", st.action, st.image, tt.action, tt.wantsImg)
			}
		})
	}
}

func TestLastSegment(t *testing.T) {
	for in, want := range map[string]string{"https://gc/api/v1/cases/images/11/": "11", "x/y": "y", "z": "z", "": ""} {
		if got := lastSegment(in); got != want {
			t.Errorf("lastSegment(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRun(t *testing.T) {
	srv := gcapitest.NewServer(gcapitest.Options{Token: "good-token", Logger: slog.New(slog.DiscardHandler)})
	defer srv.Close()
	srv.AddArchive("my-archive", "My archive")
	srv.AddInterface("ct-image", "Image")
	srv.AddInterface("ct-image-2", "Image")
	srv.AddInterface("report", "PDF file")
	var pks []string
	for _, title := range []string{"case1", "case2"} {
		it := srv.AddItem("my-archive", title)
		if err := srv.AddImageValue(it.PK, "ct-image", title+".mha", gcapitest.SampleMHA(1, 4, 4, 1)); err != nil {
			t.Fatal(err)
		}
		pks = append(pks, it.PK)
	}
	srv.AddItem("my-archive", "empty")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	api, err := gcapi.New(srv.URL, srv.Token(), gcapi.WithHTTPClient(&http.Client{Transport: tr}),
		gcapi.WithRetry(gcapi.RetryPolicy{BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	patches := func() int {
		n := 0
		for _, r := range srv.Requests() {
			if r.Method == "PATCH" {
				n++
			}
		}
		return n
	}
	opts := Options{Archive: "my-archive", From: "ct-image", To: "ct-image-2"}
	run := func(t *testing.T, o Options) (string, error) {
		t.Helper()
		var out bytes.Buffer
		err := Run(context.Background(), api, o, &out, slog.New(slog.DiscardHandler))
		return out.String(), err
	}

	t.Run("dry run changes nothing", func(t *testing.T) {
		o := opts
		o.DryRun = true
		out, err := run(t, o)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "2 of 3 items to change") || !strings.Contains(out, "skip: no image under ct-image") {
			t.Errorf("plan:\n%s", out)
		}
		if n := patches(); n != 0 {
			t.Errorf("a dry run sent %d PATCHes", n)
		}
	})
	t.Run("attaches the same image, keeps the old value", func(t *testing.T) {
		out, err := run(t, opts)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, it := range srv.Items("my-archive") {
			if it.Title == "empty" {
				continue
			}
			from, to := it.Value("ct-image"), it.Value("ct-image-2")
			if from == nil || to == nil || from.Image == nil || to.Image == nil || *from.Image != *to.Image {
				t.Errorf("item %s: from %+v, to %+v; want the same image under both", it.Title, from, to)
			}
		}
		if n := len(srv.Uploads()); n != 0 {
			t.Errorf("%d uploads: relink must not upload", n)
		}
	})
	t.Run("a second run is a no-op", func(t *testing.T) {
		before := patches()
		out, err := run(t, opts)
		if err != nil || !strings.Contains(out, "0 of 3 items to change") || strings.Count(out, "done already") != 2 {
			t.Errorf("err %v:\n%s", err, out)
		}
		if n := patches() - before; n != 0 {
			t.Errorf("the second run sent %d PATCHes", n)
		}
	})
	t.Run("one item", func(t *testing.T) {
		o := opts
		o.Items, o.DryRun = []string{pks[0]}, true
		out, err := run(t, o)
		if err != nil || !strings.Contains(out, "0 of 1 items") {
			t.Errorf("err %v:\n%s", err, out)
		}
	})
	t.Run("to a socket that is not an image", func(t *testing.T) {
		o := opts
		o.To = "report"
		_, err := run(t, o)
		var ke *KindError
		if !errors.As(err, &ke) || ke.Slug != "report" {
			t.Errorf("err %v, want a *KindError for report", err)
		}
	})
}
