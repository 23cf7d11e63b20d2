package main

import (
	"strings"
	"testing"

	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

// The command line of relink: its flags reach the relink package, and an
// interface that is not an image is a usage error (exit 2). What relink
// does to the items is tested in package relink.
func TestRelink(t *testing.T) {
	f := newFixture(t, "good-token", "")
	f.srv.AddInterface("ct-image-2", "Image")
	env := map[string]string{"GRAND_CHALLENGE_TOKEN": "good-token"}
	it := f.srv.AddItem("my-archive", "case1")
	if err := f.srv.AddImageValue(it.PK, "ct-image", "case1.mha", gcapitest.SampleMHA(1, 4, 4, 1)); err != nil {
		t.Fatal(err)
	}
	f.srv.AddItem("my-archive", "empty")
	args := []string{"relink", "--config", f.cfg, "--archive", "my-archive", "--from", "ct-image", "--to", "ct-image-2"}

	t.Run("dry run", func(t *testing.T) {
		r := runCLI(t, env, append(args, "--dry-run")...)
		if r.code != exitOK {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, "1 of 2 items to change") || !strings.Contains(r.stdout, "skip: no image under ct-image") {
			t.Errorf("plan:\n%s", r.stdout)
		}
	})
	t.Run("one item", func(t *testing.T) {
		r := runCLI(t, env, append(args, "--item", it.PK)...)
		if r.code != exitOK || !strings.Contains(r.stdout, "1 of 1 items") || !strings.Contains(r.stdout, "ok    "+it.PK) {
			t.Errorf("exit %d:\n%s\n%s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("to a socket that is not an image", func(t *testing.T) {
		r := runCLI(t, env, "relink", "--config", f.cfg, "--archive", "my-archive", "--from", "ct-image", "--to", "report")
		if r.code != exitUsage || !strings.Contains(r.stderr, "relink moves images between image interfaces") {
			t.Errorf("exit %d, want %d: %s", r.code, exitUsage, r.stderr)
		}
	})
}
