// Command testfmt reads `go test -json` on stdin and prints, as they
// happen: each package's result, each failed test with its output, each
// top-level test that took long, and every 20 seconds which long tests are
// still running; so a suite of several minutes is never silent. It exits 1
// when anything failed.
//
//	go test -race -json ./... | go run ./.ci/testfmt
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// slow is how long a top-level test runs before it is named.
const slow = 10 * time.Second

type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

type key struct{ pkg, test string }

type printer struct {
	mu      sync.Mutex
	w       io.Writer
	running map[key]time.Time
	output  map[key][]string // of tests and packages, until they pass or fail
	failed  bool
	counts  map[string]int // tests (subtests too) by "pass", "fail", "skip"
}

func main() {
	p := &printer{w: os.Stdout, running: map[key]time.Time{}, output: map[key][]string{}, counts: map[string]int{}}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(20 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				p.still(time.Now())
			}
		}
	}()
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.Action == "" {
			// Not an event (a build error printed as text): pass it on.
			fmt.Fprintln(os.Stdout, sc.Text())
			continue
		}
		p.handle(ev, time.Now())
	}
	close(done)
	// The plain closing line any reader of test output understands.
	fmt.Fprintf(p.w, "tests: %d passed, %d failed, %d skipped\n", p.counts["pass"], p.counts["fail"], p.counts["skip"])
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "testfmt:", err)
		os.Exit(1)
	}
	if p.failed {
		os.Exit(1)
	}
}

func (p *printer) handle(ev event, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := key{ev.Package, ev.Test}
	top := ev.Test != "" && !strings.Contains(ev.Test, "/")
	if ev.Test != "" && (ev.Action == "pass" || ev.Action == "fail" || ev.Action == "skip") {
		p.counts[ev.Action]++
	}
	switch ev.Action {
	case "run":
		if top {
			p.running[k] = now
		}
	case "output", "build-output":
		if ev.Test != "" {
			// Subtests' output belongs to their top-level test.
			k.test, _, _ = strings.Cut(ev.Test, "/")
		}
		p.output[k] = append(p.output[k], ev.Output)
	case "pass", "skip":
		delete(p.running, k)
		if top && ev.Elapsed >= slow.Seconds() {
			fmt.Fprintf(p.w, "    %-6s %s %s (%.1fs)\n", ev.Action, short(ev.Package), ev.Test, ev.Elapsed)
		}
		switch {
		case ev.Test == "" && ev.Action == "skip":
			fmt.Fprintf(p.w, "?      %s [no test files]\n", ev.Package)
		case ev.Test == "":
			fmt.Fprintf(p.w, "ok     %s %.1fs\n", ev.Package, ev.Elapsed)
		}
		if top || ev.Test == "" {
			delete(p.output, k)
		}
	case "fail":
		delete(p.running, k)
		p.failed = true
		if top || ev.Test == "" {
			for _, line := range p.output[k] {
				io.WriteString(p.w, line)
			}
			delete(p.output, k)
		}
		if ev.Test == "" {
			fmt.Fprintf(p.w, "FAIL   %s %.1fs\n", ev.Package, ev.Elapsed)
		}
	}
}

// still names the top-level tests running for longer than slow.
func (p *printer) still(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var names []string
	for k, start := range p.running {
		if d := now.Sub(start); d >= slow {
			names = append(names, fmt.Sprintf("%s %s (%s)", short(k.pkg), k.test, d.Round(time.Second)))
		}
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(p.w, "    running %s\n", n)
	}
}

// short drops the module path from a package name.
func short(pkg string) string {
	if _, rest, ok := strings.Cut(pkg, "/gcingest/gcingest"); ok {
		if rest == "" {
			return "."
		}
		return "." + rest
	}
	return pkg
}
