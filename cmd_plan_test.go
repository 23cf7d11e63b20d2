package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// At a terminal plan's stdout and stderr are one screen: the scan's log
// lines come after the tables, never inside one, and the info lines that
// only repeat a table's rows (a file ignored, and why) are left out.
func TestPlanLogsAfterItsTables(t *testing.T) {
	f := newFixture(t, "t", "")
	old := time.Now().Add(-time.Hour)
	for name, b := range map[string]string{
		// A header the grouper cannot follow: logged as a warning.
		"list.mhd":  "ObjectType = Image\nNDims = 3\nElementDataFile = LIST\n",
		"notes.xyz": "not an image",
	} {
		p := filepath.Join(f.drop, name)
		if err := os.WriteFile(p, []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	var screen bytes.Buffer
	c := &cli{stdout: &screen, stderr: &screen, getenv: func(string) string { return "" }}
	if err := c.dispatch(context.Background(), []string{"plan", "--config", f.cfg}); err != nil {
		t.Fatalf("plan: %v\n%s", err, screen.String())
	}
	lines := strings.Split(strings.TrimSuffix(screen.String(), "\n"), "\n")
	table := 0 // the last line of the table
	for i, l := range lines {
		if strings.HasPrefix(l, "  ") || strings.Contains(l, "(group = ") {
			table = i
		}
	}
	var logged []string
	for i, l := range lines {
		if strings.Contains(l, "level=") {
			if i < table {
				t.Errorf("log line %d is inside the table:\n%s", i, screen.String())
			}
			logged = append(logged, l)
		}
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "level=WARN") || !strings.Contains(logged[0], "list.mhd") {
		t.Errorf("logged %q, want the one warning about list.mhd:\n%s", logged, screen.String())
	}
	if !strings.Contains(screen.String(), "notes.xyz") {
		t.Errorf("the table lacks the ignored notes.xyz:\n%s", screen.String())
	}
}
