package main

import (
	"strings"
	"testing"

	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

func TestRelink(t *testing.T) {
	f := newFixture(t, "good-token", "")
	f.srv.AddInterface("ct-image-2", "Image")
	env := map[string]string{"GRAND_CHALLENGE_TOKEN": "good-token"}
	var pks []string
	for _, title := range []string{"case1", "case2"} {
		it := f.srv.AddItem("my-archive", title)
		if err := f.srv.AddImageValue(it.PK, "ct-image", title+".mha", gcapitest.SampleMHA(1, 4, 4, 1)); err != nil {
			t.Fatal(err)
		}
		pks = append(pks, it.PK)
	}
	f.srv.AddItem("my-archive", "empty")
	patches := func() int {
		n := 0
		for _, r := range f.srv.Requests() {
			if r.Method == "PATCH" {
				n++
			}
		}
		return n
	}
	args := []string{"relink", "--config", f.cfg, "--archive", "my-archive", "--from", "ct-image", "--to", "ct-image-2"}

	t.Run("dry run changes nothing", func(t *testing.T) {
		r := runCLI(t, env, append(args, "--dry-run")...)
		if r.code != exitOK {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, "2 of 3 items to change") || !strings.Contains(r.stdout, "skip: no image under ct-image") {
			t.Errorf("plan:\n%s", r.stdout)
		}
		if n := patches(); n != 0 {
			t.Errorf("--dry-run sent %d PATCHes", n)
		}
	})
	t.Run("attaches the same image, keeps the old value", func(t *testing.T) {
		r := runCLI(t, env, args...)
		if r.code != exitOK {
			t.Fatalf("exit %d: %s\n%s", r.code, r.stdout, r.stderr)
		}
		for _, it := range f.srv.Items("my-archive") {
			if it.Title == "empty" {
				continue
			}
			from, to := it.Value("ct-image"), it.Value("ct-image-2")
			if from == nil || to == nil || from.Image == nil || to.Image == nil || *from.Image != *to.Image {
				t.Errorf("item %s: from %+v, to %+v; want the same image under both", it.Title, from, to)
			}
		}
		if n := len(f.srv.Uploads()); n != 0 {
			t.Errorf("%d uploads: relink must not upload", n)
		}
	})
	t.Run("a second run is a no-op", func(t *testing.T) {
		before := patches()
		r := runCLI(t, env, args...)
		if r.code != exitOK || !strings.Contains(r.stdout, "0 of 3 items to change") || strings.Count(r.stdout, "done already") != 2 {
			t.Errorf("exit %d:\n%s", r.code, r.stdout)
		}
		if n := patches() - before; n != 0 {
			t.Errorf("the second run sent %d PATCHes", n)
		}
	})
	t.Run("one item", func(t *testing.T) {
		r := runCLI(t, env, append(args, "--item", pks[0], "--dry-run")...)
		if r.code != exitOK || !strings.Contains(r.stdout, "0 of 1 items") {
			t.Errorf("exit %d:\n%s\n%s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("to a socket that is not an image", func(t *testing.T) {
		r := runCLI(t, env, "relink", "--config", f.cfg, "--archive", "my-archive", "--from", "ct-image", "--to", "report")
		if r.code != exitUsage {
			t.Errorf("exit %d, want %d: %s", r.code, exitUsage, r.stderr)
		}
	})
}
