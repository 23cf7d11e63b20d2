// Package docs holds no code: its test holds docs/*.md and README.md to
// the code they cite, so that a correctness argument written in prose
// does not outlive the code it names.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	span  = regexp.MustCompile("`([^`]+)`")
	ident = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)
)

// TestCitationsExist: every `file.go` a document names exists, and every
// identifier named right after a file (`ingest/after.go` `doneTarget`) is
// declared in that file.
func TestCitationsExist(t *testing.T) {
	root := ".."
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	docs = append(docs, filepath.Join(root, "README.md"))
	byBase := goFiles(t, root)
	checked := 0
	for _, doc := range docs {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for n, line := range strings.Split(string(b), "\n") {
			file := "" // the Go file cited last on this line
			end := 0   // where the span before ended
			for _, m := range span.FindAllStringSubmatchIndex(line, -1) {
				tok, between := line[m[2]:m[3]], line[end:m[0]]
				end = m[1]
				if strings.Trim(between, " ,") != "" && strings.TrimSpace(between) != "and" {
					file = "" // only names right after a file, listed, are its
				}
				switch {
				case strings.HasSuffix(tok, ".go") && !strings.ContainsAny(tok, " *"):
					file = resolve(root, tok, byBase)
					if file == "" {
						t.Errorf("%s:%d cites %s, which does not exist", filepath.Base(doc), n+1, tok)
					}
					checked++
				case file != "" && ident.MatchString(tok):
					name := tok[strings.LastIndexByte(tok, '.')+1:]
					if !declares(t, file, name) {
						t.Errorf("%s:%d cites %s in %s, which does not declare it", filepath.Base(doc), n+1, tok, strings.TrimPrefix(file, root+"/"))
					}
					checked++
				default:
					file = ""
				}
			}
		}
	}
	if checked < 20 {
		t.Errorf("only %d citations found; the test no longer reads the documents it should", checked)
	}
}

// goFiles maps each Go file's base name to its paths under root.
func goFiles(t *testing.T, root string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(p, ".go") {
			out[d.Name()] = append(out[d.Name()], p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// resolve finds the file tok names: a path from the module root, or, for a
// bare name, the one file of that name.
func resolve(root, tok string, byBase map[string][]string) string {
	if strings.Contains(tok, "/") {
		p := filepath.Join(root, filepath.FromSlash(tok))
		if _, err := os.Stat(p); err == nil {
			return p
		}
		return ""
	}
	if ps := byBase[tok]; len(ps) > 0 {
		return ps[0]
	}
	return ""
}

// declares reports whether the Go file declares name: a function, a
// method, a type, or a const or var.
func declares(t *testing.T, file, name string) bool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	q := regexp.QuoteMeta(name)
	re := regexp.MustCompile(`(?m)^(func (\([^)]*\) )?` + q + `[\[(]|type ` + q + `\b|\s*` + q + `\s+[^\n=]*=|(const|var) ` + q + `\b|\t` + q + `\s+(\S+\s+)?=)`)
	return re.Match(b)
}
