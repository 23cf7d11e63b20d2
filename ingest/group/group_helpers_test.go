package group

import (
	"bytes"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gcingest/gcingest/watch"
)

// t0 is the fake clock's start; tests drive time through the now argument.
var t0 = time.Unix(1_700_000_000, 0)

const testSettle = 10 * time.Second

// tree is a drop folder on disk.
type tree struct {
	t    *testing.T
	root string
}

func newTree(t *testing.T) *tree {
	t.Helper()
	return &tree{t: t, root: t.TempDir()}
}

func (tr *tree) abs(rel string) string { return filepath.Join(tr.root, filepath.FromSlash(rel)) }

func (tr *tree) write(rel string, data []byte) {
	tr.t.Helper()
	p := tr.abs(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *tree) appendTo(rel string, data []byte) {
	tr.t.Helper()
	f, err := os.OpenFile(tr.abs(rel), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		tr.t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		tr.t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tr.t.Fatal(err)
	}
}

// observe tells g about one file as a watcher event would.
func (tr *tree) observe(g *Grouper, rel string, now time.Time) {
	tr.t.Helper()
	fi, err := os.Lstat(tr.abs(rel))
	if err != nil {
		fi = nil
	}
	g.Observe(tr.abs(rel), fi, now)
}

// scan feeds g a full scan of the tree as the watcher's rescan would.
func (tr *tree) scan(g *Grouper, now time.Time) {
	tr.t.Helper()
	g.BeginScan()
	err := filepath.WalkDir(tr.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			g.Observe(p, fi, now)
		}
		return nil
	})
	if err != nil {
		tr.t.Fatal(err)
	}
	g.EndScan(now)
}

func (tr *tree) watch(group watch.Group) watch.Spec {
	return watch.Spec{Path: tr.root, Group: group, Settle: testSettle}
}

// describe renders groups as "key kind rel,rel" lines for comparison.
func describe(gs []Group) []string {
	var out []string
	for _, g := range gs {
		var rels []string
		for _, f := range g.Files {
			rels = append(rels, f.Rel)
		}
		out = append(out, fmt.Sprintf("%s %s %s", g.Key, g.Kind, strings.Join(rels, ",")))
	}
	sort.Strings(out)
	return out
}

func describeWaiting(ws []Waiting) map[string]string {
	out := make(map[string]string)
	for _, w := range ws {
		out[w.Key] = w.Reason
	}
	return out
}

// logBuffer collects log output for assertions on what a user would read.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newTestLogger() (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// mhdText is a MetaIO header naming dataFile.
func mhdText(dims string, elemType string, dataFile string, extra string) []byte {
	return []byte("ObjectType = Image\nNDims = 3\nDimSize = " + dims + "\nElementType = " + elemType + "\n" + extra + "ElementDataFile = " + dataFile + "\n")
}
