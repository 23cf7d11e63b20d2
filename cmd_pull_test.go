package main

import (
	"strings"
	"testing"
)

func TestPullCommandErrors(t *testing.T) {
	f := newFixture(t, "t", "")
	env := map[string]string{"GRAND_CHALLENGE_TOKEN": "t"}
	t.Run("wrong slug fails before any summary", func(t *testing.T) {
		r := runCLI(t, env, "pull", "--config", f.cfg, "--archive", "no-such-archive", "--out", t.TempDir())
		if r.code != exitError {
			t.Errorf("exit %d, want %d", r.code, exitError)
		}
		if strings.Contains(r.stdout, "items") {
			t.Errorf("printed a summary for an archive it never found: %q", r.stdout)
		}
		if !strings.Contains(r.stderr, `"no-such-archive"`) {
			t.Errorf("stderr %q does not name the slug", r.stderr)
		}
	})
	t.Run("empty archive prints its summary", func(t *testing.T) {
		r := runCLI(t, env, "pull", "--config", f.cfg, "--archive", "my-archive", "--out", t.TempDir())
		if r.code != exitOK || !strings.Contains(r.stdout, "0 items: 0 files downloaded (0 B)") {
			t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})
}
