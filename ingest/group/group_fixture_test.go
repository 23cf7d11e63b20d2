package group

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/watch"
)

// TestGroupFixtures runs the grouper over each testdata/group/<case>/drop
// tree and compares what it makes of it with the case's expect.txt (see
// TestWriteGroupFixtures for how the fixtures are made and expect.txt's
// form). Each case is checked twice: as the daemon sees it (every file
// observed twice on a fake clock, then Ready and Waiting past settle), and
// as `gcingest plan` shows it (files an hour old), which also lists the
// ignored files.
func TestGroupFixtures(t *testing.T) {
	cases, err := os.ReadDir(filepath.Join("testdata", "group"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) == 0 {
		t.Fatal("no cases in testdata/group")
	}
	for _, c := range cases {
		if !c.IsDir() {
			continue
		}
		t.Run(c.Name(), func(t *testing.T) {
			dir := filepath.Join("testdata", "group", c.Name())
			want := readExpect(t, filepath.Join(dir, "expect.txt"))
			root := t.TempDir()
			copyTree(t, filepath.Join(dir, "drop"), root)
			w := readWatchOptions(t, filepath.Join(dir, "watch.txt"))
			w.Path, w.Settle = root, testSettle

			t.Run("grouper", func(t *testing.T) {
				tr := &tree{t: t, root: root}
				g := NewGrouper(w, nil)
				tr.scan(g, t0)
				if got := describe(g.Ready(t0)); len(got) > 0 {
					t.Errorf("Ready before settle = %q, want nothing", got)
				}
				t1 := t0.Add(testSettle + time.Second)
				tr.scan(g, t1)
				var got []outcome
				for _, gr := range g.Ready(t1) {
					got = append(got, readyOutcome(gr.Kind, gr.Key, fileRels(gr.Files)))
				}
				for _, wt := range g.Waiting(t1) {
					got = append(got, waitingOutcome(wt.Kind, wt.Key, wt.Files, wt.Reason))
				}
				var wantGrouped []outcome
				for _, o := range want {
					if o.state != PlanIgnored {
						wantGrouped = append(wantGrouped, o)
					}
				}
				compareOutcomes(t, got, wantGrouped)
				if again := describe(g.Ready(t1.Add(time.Minute))); len(again) > 0 {
					t.Errorf("Ready again with nothing changed = %q, want nothing", again)
				}
			})

			t.Run("plan", func(t *testing.T) {
				old := time.Now().Add(-time.Hour)
				err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
					if err != nil || d.IsDir() {
						return err
					}
					return os.Chtimes(p, old, old)
				})
				if err != nil {
					t.Fatal(err)
				}
				rep, err := Plan(context.Background(), w, nil)
				if err != nil {
					t.Fatal(err)
				}
				var got []outcome
				for _, e := range rep.Entries {
					switch e.State {
					case PlanReady:
						got = append(got, readyOutcome(e.Kind, e.Key, fileRels(e.Files)))
					case PlanWaiting:
						got = append(got, waitingOutcome(e.Kind, e.Key, fileRels(e.Files), e.Reason))
					default:
						got = append(got, outcome{state: e.State, head: e.State + " " + q(e.Key), reason: e.Reason})
					}
				}
				compareOutcomes(t, got, want)
			})
		})
	}
}

// outcome is one line of expect.txt, or one group or ignored file found.
// head is the line up to the reason with every name in its canonical
// quoting: "ready <kind> <key> <other files>", "waiting <kind|-> <key>
// <other files>", "ignored <file>". Files are relative to the drop folder,
// sorted, and the key is not repeated among them.
type outcome struct {
	state  string
	head   string
	reason string // what was found; or a substring the found reason must hold
}

func readyOutcome(kind Kind, key string, files []string) outcome {
	return outcome{state: PlanReady, head: outcomeHead(PlanReady, kind, key, files)}
}

func waitingOutcome(kind Kind, key string, files []string, reason string) outcome {
	return outcome{state: PlanWaiting, head: outcomeHead(PlanWaiting, kind, key, files), reason: reason}
}

func outcomeHead(state string, kind Kind, key string, files []string) string {
	k := string(kind)
	if k == "" {
		k = "-"
	}
	parts := []string{state, k, q(key)}
	for _, f := range files {
		if f != key {
			parts = append(parts, q(f))
		}
	}
	return strings.Join(parts, " ")
}

func fileRels(fs []File) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Rel
	}
	return out
}

// compareOutcomes reports every wanted line not found, every found one not
// wanted, and every reason that lacks the wanted substring.
func compareOutcomes(t *testing.T, got, want []outcome) {
	t.Helper()
	byHead := make(map[string]outcome)
	for _, o := range got {
		if _, dup := byHead[o.head]; dup {
			t.Errorf("found twice: %s", o.head)
		}
		byHead[o.head] = o
	}
	for _, w := range want {
		g, ok := byHead[w.head]
		if !ok {
			t.Errorf("missing: %s", w.head)
			continue
		}
		delete(byHead, w.head)
		if !strings.Contains(g.reason, w.reason) {
			t.Errorf("%s: reason = %q, want it to contain %q", w.head, g.reason, w.reason)
		}
	}
	for _, o := range got {
		if _, extra := byHead[o.head]; extra {
			t.Errorf("not expected: %s (reason %q)", o.head, o.reason)
		}
	}
}

// readExpect parses expect.txt: one outcome a line, "#" lines are comments.
// Names are single tokens, or Go-quoted strings when they hold spaces or
// colons; a waiting or ignored line may end in ": <reason substring>".
func readExpect(t *testing.T, file string) []outcome {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []outcome
	for n, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line == "" || line[0] == '#' {
			continue
		}
		toks, reason, err := splitExpectLine(line)
		if err != nil {
			t.Fatalf("%s:%d: %v", file, n+1, err)
		}
		o := outcome{state: toks[0], reason: reason}
		switch {
		case o.state == PlanReady && len(toks) >= 3 && reason == "":
			o.head = outcomeHead(o.state, Kind(toks[1]), toks[2], toks[3:])
		case o.state == PlanWaiting && len(toks) >= 3:
			kind := Kind(toks[1])
			if kind == "-" {
				kind = ""
			}
			o.head = outcomeHead(o.state, kind, toks[2], toks[3:])
		case o.state == PlanIgnored && len(toks) == 2:
			o.head = o.state + " " + q(toks[1])
		default:
			t.Fatalf("%s:%d: want \"ready <kind> <key> [files]\", \"waiting <kind> <key> [files]: <reason>\" or \"ignored <file>[: <reason>]\", got %q", file, n+1, line)
		}
		out = append(out, o)
	}
	return out
}

// splitExpectLine splits a line into tokens up to an unquoted ": ", and the
// reason after it.
func splitExpectLine(line string) (toks []string, reason string, err error) {
	for s := line; ; {
		s = strings.TrimLeft(s, " ")
		switch {
		case s == "":
			return toks, "", nil
		case s[0] == ':':
			return toks, strings.TrimSpace(s[1:]), nil
		case s[0] == '"':
			qs, err := strconv.QuotedPrefix(s)
			if err != nil {
				return nil, "", fmt.Errorf("bad quoted name in %q: %w", s, err)
			}
			name, _ := strconv.Unquote(qs)
			toks = append(toks, name)
			s = s[len(qs):]
		default:
			end := len(s)
			if i := strings.IndexByte(s, ' '); i >= 0 {
				end = i
			}
			if strings.HasSuffix(s[:end], ":") {
				end--
			}
			toks = append(toks, s[:end])
			s = s[end:]
		}
	}
}

// readWatchOptions reads the "key = value" lines of watch.txt (group,
// exclude); a case without one uses group = auto.
func readWatchOptions(t *testing.T, file string) watch.Spec {
	t.Helper()
	w := watch.Spec{Group: watch.GroupAuto}
	data, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return w
	}
	if err != nil {
		t.Fatal(err)
	}
	for n, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line == "" || line[0] == '#' {
			continue
		}
		key, value, _ := strings.Cut(line, "=")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch key {
		case "group":
			w.Group = watch.Group(value)
		case "exclude":
			w.Exclude = append(w.Exclude, value)
		case "incomplete_wait":
			d, err := time.ParseDuration(value)
			if err != nil {
				t.Fatalf("%s:%d: %v", file, n+1, err)
			}
			w.IncompleteWait = d
		default:
			t.Fatalf("%s:%d: unknown option %q", file, n+1, key)
		}
	}
	return w
}

// copyTree copies the regular files under src to dst, so each run gets
// fresh modification times and may change them.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	var n int
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		n++
		return os.WriteFile(to, data, 0o644)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
	if n == 0 {
		t.Fatalf("copy %s: no files", src)
	}
}
