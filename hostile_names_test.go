package main

// File names come from drop folders anyone may write to. These tests drop
// files named to attack the terminal (printabletest.Names) and read every
// human output that shows them: none may hold a raw control or bidi
// character, and each must show the name escaped, so that the reader
// still tells which file is meant.

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/printable/printabletest"
	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/status"
)

// checkShown fails when out holds a raw control or bidi character (line
// feeds apart: outputs are lines), or lacks one of want.
func checkShown(t *testing.T, what, out string, want ...string) {
	t.Helper()
	if raw := printabletest.Raw(out); raw != "" {
		t.Errorf("%s holds %s:\n%q", what, raw, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %s:\n%s", what, w, out)
		}
	}
}

// writeOld writes a file settled an hour ago.
func writeOld(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
}

// TestHostileNamesInPlanStatusAndRetry: plan over real files, status and
// status ID from a real state file, and retry's errors.
func TestHostileNamesInPlanStatusAndRetry(t *testing.T) {
	f := newFixture(t, "t", "")
	if err := printabletest.TryNames(f.drop); err != nil {
		t.Skipf("this file system refuses the names: %v", err)
	}
	names, escaped := printabletest.Names, printabletest.Escaped
	for _, n := range names {
		writeOld(t, filepath.Join(f.drop, n), gcapitest.SampleMHA(1, 4, 4, 1))
		writeOld(t, filepath.Join(f.drop, n+".txt"), []byte("x"))
	}
	t.Run("plan", func(t *testing.T) {
		r := runCLI(t, nil, "plan", "--config", f.cfg)
		if r.code != exitOK {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		checkShown(t, "plan", r.stdout, escaped...)
		checkShown(t, "plan's stderr", r.stderr)
		if got, want := strings.Count(r.stdout, "\n"), 2+2*len(names); got != want {
			t.Errorf("plan printed %d lines, want %d (heading, columns, a line per file):\n%s", got, want, r.stdout)
		}
	})

	// Failed images whose files went to failed_dir and are no longer there:
	// retry cannot move them back, and says which file it tried.
	st, err := state.Open(f.state, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	failed := filepath.Join(f.dir, "failed")
	t0 := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	var ids []string
	for _, n := range names {
		rel := "gone/" + n
		path := filepath.Join(f.drop, "gone", n)
		// No title: the state file keeps the bytes of names (RawNames),
		// not of a title, which the agent makes valid UTF-8.
		img := &state.Image{Watch: f.drop, Key: rel, Kind: "single", State: state.Failed,
			Attempts: 1, LastError: "hash: cannot read " + path + ": permission denied", MovedTo: failed, ActionDone: true,
			Files:   []state.File{{Rel: rel, Path: path, Size: 10}},
			Uploads: []state.Upload{{Filename: strings.ToValidUTF8(n, "_"), Size: 10}}, // as uploadName makes it
			Values:  []state.Value{{Interface: "ct-image", Kind: "image", Files: []string{rel}}},
			Created: t0, Updated: t0}
		if err := st.Create(img); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, strconv.FormatUint(img.ID, 10))
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	t.Run("status", func(t *testing.T) {
		r := runCLI(t, nil, "status", "--config", f.cfg)
		if r.code != exitOK {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		checkShown(t, "status", r.stdout, escaped...)
		if got, want := strings.Count(r.stdout, "\n"), 7+3*len(names); got != want {
			t.Errorf("status printed %d lines, want %d:\n%s", got, want, r.stdout)
		}
	})
	t.Run("status ID", func(t *testing.T) {
		for i, id := range ids {
			upload := escaped[i]
			if !utf8.ValidString(names[i]) {
				upload = strings.ToValidUTF8(names[i], "_")
			}
			r := runCLI(t, nil, "status", "--config", f.cfg, id)
			if r.code != exitOK {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			checkShown(t, "status "+id, r.stdout, " gone/"+escaped[i]+"\n", filepath.Join(f.drop, "gone", escaped[i])+"  10 B\n",
				"\n  "+upload+"  0 B of 10 B sent", "ct-image (image) gone/"+escaped[i]+"  not yet")
		}
	})
	t.Run("status --json keeps valid names exact", func(t *testing.T) {
		r := runCLI(t, nil, "status", "--config", f.cfg, "--json")
		var rep status.Report
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != exitOK {
			t.Fatalf("exit %d, %v:\n%s", r.code, err, r.stdout)
		}
		for i, im := range rep.Images {
			want := "gone/" + names[i]
			if !utf8.ValidString(want) {
				want = "gone/" + escaped[i] // as the running agent sends it (ingest.EscapedNames)
			}
			if im.Key != want {
				t.Errorf("image %s: key %q, want %q", im.ID, im.Key, want)
			}
		}
	})
	t.Run("retry", func(t *testing.T) {
		r := runCLI(t, nil, append([]string{"retry", "--config", f.cfg}, ids...)...)
		if r.code != exitError {
			t.Fatalf("exit %d, want %d: %s", r.code, exitError, r.stderr)
		}
		var want []string
		for _, e := range escaped {
			want = append(want, filepath.Join(failed, "gone", e))
		}
		checkShown(t, "retry's error", r.stderr, want...)
		if got := strings.Count(r.stderr, "\n"); got != len(names) {
			t.Errorf("retry's error has %d lines, want %d, one per image:\n%s", got, len(names), r.stderr)
		}
	})
}

// TestHostileNamesInCheck: check's lines name the folder items run would
// refuse, and give run's reason, which names them again.
func TestHostileNamesInCheck(t *testing.T) {
	f := newFixture(t, "good-token", "group = \"folder\"\nsettle = \"1s\"\n")
	if err := printabletest.TryNames(f.drop); err != nil {
		t.Skipf("this file system refuses the names: %v", err)
	}
	for _, n := range printabletest.Names {
		writeOld(t, filepath.Join(f.drop, n, "ct.mha"), gcapitest.SampleMHA(1, 4, 4, 1))
		writeOld(t, filepath.Join(f.drop, n, "values.json"), []byte(`{"lung-volume": "large"}`))
	}
	env := map[string]string{"GRAND_CHALLENGE_TOKEN": "good-token"}
	r := runCLI(t, env, "check", "--config", f.cfg)
	if r.code != exitError {
		t.Errorf("exit %d, want %d: %s", r.code, exitError, r.stderr)
	}
	var want []string
	for _, e := range printabletest.Escaped {
		want = append(want, "FAIL  watch[0] folder "+e+": values.json in "+e+": lung-volume:")
	}
	checkShown(t, "check", r.stdout, want...)
	checkShown(t, "check's stderr", r.stderr)

	r = runCLI(t, env, "plan", "--config", f.cfg)
	if r.code != exitOK {
		t.Fatalf("plan: exit %d: %s", r.code, r.stderr)
	}
	checkShown(t, "plan of folders", r.stdout, printabletest.Escaped...)
}

// TestE2EHostileNamesAreEscaped runs the agent on files with hostile names
// whose import the server refuses, naming them, then reads what a person reads: the
// .error.txt notes, status and status ID from the running agent and from
// the state file, and retry's errors from both.
func TestE2EHostileNamesAreEscaped(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end process test; runs without -short")
	}
	names, escaped := printabletest.Names, printabletest.Escaped
	e := newE2E(t, gcapitest.Options{Seed: 41}, "")
	if err := printabletest.TryNames(e.drop); err != nil {
		t.Skipf("this file system refuses the names: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), `listen = ""`, fmt.Sprintf("listen = %q", listen), 1))
	if err := os.WriteFile(e.config, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	// The server refuses every import quoting the files' names, as
	// panimg's messages do.
	e.srv.SetFaults(gcapitest.Faults{FailImport: func(files []string) string {
		return "could not import " + strings.Join(files, ", ")
	}})
	for i, n := range names {
		if err := os.WriteFile(filepath.Join(e.drop, n), gcapitest.SampleMHA(int64(i), 8, 8, 2), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gcingest := func(args ...string) (stdout, stderr string, code int) {
		t.Helper()
		cmd := exec.Command(gcingestBinary(t), append(args, "--config", e.config)...)
		var o, er strings.Builder
		cmd.Stdout, cmd.Stderr = &o, &er
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return o.String(), er.String(), code
	}

	// reason is the server's error for names[i] as shown. A name that is
	// not UTF-8 is sent under another (ingest.uploadName), and the error
	// is not checked for it.
	reason := func(i int) string {
		if !utf8.ValidString(names[i]) {
			return "could not import bad"
		}
		return "could not import " + escaped[i]
	}
	// statusReason is reason as status shows it, on one line: every run of
	// white space in an error, a CR or LF in a name too, becomes a space
	// there (the name's key and files show it escaped).
	statusReason := func(i int) string {
		if strings.ContainsAny(names[i], "\r\n") {
			return strings.Join(strings.Fields(strings.ReplaceAll(reason(i), escaped[i], names[i])), " ")
		}
		return reason(i)
	}

	cmd := e.start()
	waitFor(t, time.Minute, "every file in failed_dir with its note", func() bool {
		for _, n := range names {
			if _, err := os.Stat(filepath.Join(e.failed, n+".error.txt")); err != nil {
				return false
			}
		}
		return true
	}, e.logTail)
	for i, n := range names {
		note, err := os.ReadFile(filepath.Join(e.failed, n+".error.txt"))
		if err != nil {
			t.Fatal(err)
		}
		checkShown(t, "the note for "+escaped[i], string(note), "could not upload "+escaped[i]+" (image ", reason(i))
	}

	// Which ID each name got, from the JSON report.
	out, _, code := gcingest("status", "--json", "--all")
	var rep status.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitOK {
		t.Fatalf("status --json: exit %d, %v:\n%s", code, err, out)
	}
	ids := map[string]string{} // escaped name → ID
	for _, im := range rep.Images {
		ids[strings.ToValidUTF8(im.Key, "\uFFFD")] = im.ID
	}
	idOf := func(i int) string {
		t.Helper()
		key := names[i]
		if !utf8.ValidString(key) {
			key = escaped[i]
		}
		id, ok := ids[key]
		if !ok {
			t.Fatalf("no image with key %q in %v", key, ids)
		}
		return id
	}

	readStatus := func(from string) {
		t.Helper()
		out, errOut, code := gcingest("status")
		if code != exitOK {
			t.Fatalf("status (%s): exit %d: %s", from, code, errOut)
		}
		// The table names an image by its title, which the agent made
		// of letters only; the errors below it quote the names.
		var reasons []string
		for i := range names {
			reasons = append(reasons, statusReason(i))
		}
		checkShown(t, "status ("+from+")", out, reasons...)
		for i := range names {
			out, errOut, code := gcingest("status", idOf(i))
			if code != exitOK {
				t.Fatalf("status %s (%s): exit %d: %s", idOf(i), from, code, errOut)
			}
			checkShown(t, "status "+idOf(i)+" ("+from+")", out, " "+escaped[i]+"\n",
				"\n  "+filepath.Join(e.drop, escaped[i])+"  ", statusReason(i))
		}
	}
	// retryGone retries two images whose files someone took out of
	// failed_dir: each error names the file that could not be moved back.
	retryGone := func(from string, i, j int) {
		t.Helper()
		for _, k := range []int{i, j} {
			if err := os.Remove(filepath.Join(e.failed, names[k])); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		}
		out, errOut, code := gcingest("retry", idOf(i), idOf(j))
		if code != exitError {
			t.Fatalf("retry (%s): exit %d, want %d:\n%s%s", from, code, exitError, out, errOut)
		}
		checkShown(t, "retry's error ("+from+")", errOut, "retry image "+idOf(i)+": ", filepath.Join(e.failed, escaped[i]),
			"retry image "+idOf(j)+": ", filepath.Join(e.failed, escaped[j]))
		if got := strings.Count(errOut, "\n"); got != 2 {
			t.Errorf("retry's error (%s) has %d lines, want 2, one per image:\n%s", from, got, errOut)
		}
	}

	readStatus("the running agent")
	retryGone("the running agent", 0, 3)
	e.stop(cmd)
	readStatus("the state file")
	retryGone("the state file", 4, 6)
}
