package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/gcingest/gcingest/gcapi"
)

func TestArchivesAndInterfaces(t *testing.T) {
	f := newFixture(t, "t", "")
	f.srv.AddArchive("other-archive", "Other\narchive")
	env := map[string]string{"GRAND_CHALLENGE_TOKEN": "t"}

	t.Run("archives", func(t *testing.T) {
		r := runCLI(t, env, "archives", "--config", f.cfg)
		if r.code != exitOK {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`(?m)^SLUG\s+TITLE\s+URL$`),
			regexp.MustCompile(`(?m)^my-archive\s+My archive\s+http://\S+/archives/my-archive/$`),
			regexp.MustCompile(`(?m)^other-archive\s+Other archive\s+`), // a title on one row
			regexp.MustCompile(`(?m)^2 archives; use the slug as archive = "SLUG"`),
		} {
			if !want.MatchString(r.stdout) {
				t.Errorf("output does not match %s:\n%s", want, r.stdout)
			}
		}
	})

	t.Run("interfaces", func(t *testing.T) {
		r := runCLI(t, env, "interfaces", "--config", f.cfg)
		if r.code != exitOK {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`(?m)^ct-image\s+Image\s+Image\s+interface, \[watch.values\]$`),
			regexp.MustCompile(`(?m)^lung-volume\s+Float\s+Value\s+\[watch.values\]$`),
			regexp.MustCompile(`(?m)^report\s+PDF file\s+File\s+\[watch.values\]$`),
		} {
			if !want.MatchString(r.stdout) {
				t.Errorf("output does not match %s:\n%s", want, r.stdout)
			}
		}
	})

	t.Run("interfaces of an archive", func(t *testing.T) {
		ctx := context.Background()
		cl, err := gcapi.New(f.srv.URL, "t")
		if err != nil {
			t.Fatal(err)
		}
		a, err := cl.ArchiveBySlug(ctx, "my-archive")
		if err != nil {
			t.Fatal(err)
		}
		for _, title := range []string{"case1", "case2"} {
			it, err := cl.CreateArchiveItem(ctx, a.APIURL, title)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cl.UpdateArchiveItem(ctx, it.PK, []gcapi.ValueUpdate{{Interface: "lung-volume", Value: json.RawMessage("1.9")}}); err != nil {
				t.Fatal(err)
			}
		}
		r := runCLI(t, env, "interfaces", "--config", f.cfg, "--archive", "my-archive")
		if r.code != exitOK {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		if !regexp.MustCompile(`(?m)^lung-volume\s+Float\s+Value\s+\[watch.values\]\s+2$`).MatchString(r.stdout) {
			t.Errorf("lung-volume not listed as used by 2 items:\n%s", r.stdout)
		}
		if strings.Contains(r.stdout, "ct-image") || strings.Contains(r.stdout, "report") {
			t.Errorf("lists interfaces the archive does not use:\n%s", r.stdout)
		}

		r = runCLI(t, env, "interfaces", "--config", f.cfg, "--archive", "other-archive")
		if r.code != exitOK || !strings.Contains(r.stdout, "its items hold no values yet") {
			t.Errorf("empty archive: exit %d, stdout %q", r.code, r.stdout)
		}
	})

	t.Run("unknown archive", func(t *testing.T) {
		r := runCLI(t, env, "interfaces", "--config", f.cfg, "--archive", "nope")
		if r.code != exitError || !strings.Contains(r.stderr, `"nope"`) || r.stdout != "" {
			t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("wrong token", func(t *testing.T) {
		for _, cmd := range []string{"archives", "interfaces"} {
			r := runCLI(t, map[string]string{"GRAND_CHALLENGE_TOKEN": "wrong"}, cmd, "--config", f.cfg)
			if r.code != exitAuth {
				t.Errorf("%s: exit %d, want %d; stderr %q", cmd, r.code, exitAuth, r.stderr)
			}
		}
	})
}
