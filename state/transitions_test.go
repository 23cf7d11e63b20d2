package state

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the transitions table in docs/ARCHITECTURE.md")

// walk moves image id through the given states, one Update each.
func walk(t *testing.T, s *Store, id uint64, states ...State) {
	t.Helper()
	for _, st := range states {
		if _, err := s.Update(id, func(r *Image) error { r.State = st; return nil }); err != nil {
			t.Fatal(err)
		}
	}
}

// moves returns the table as a map from each state to where it may go.
func moves() map[State][]State {
	out := map[State][]State{}
	for _, tr := range Transitions {
		out[tr.From] = append(out[tr.From], tr.To)
	}
	return out
}

// reach returns every state reachable from the given ones along the table.
func reach(next map[State][]State, from ...State) map[State]bool {
	seen := map[State]bool{}
	queue := slices.Clone(from)
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		if seen[s] {
			continue
		}
		seen[s] = true
		queue = append(queue, next[s]...)
	}
	return seen
}

// TestTransitionsTable checks the table itself: only known states, no move
// listed twice or to the same state, every state reachable from Pending,
// nothing leaving a terminal state but a retry, and (docs/PATTERNS.md,
// liveness rule 1) every non-terminal state with a way to a terminal one.
func TestTransitionsTable(t *testing.T) {
	type pair struct{ from, to State }
	seen := map[pair]bool{}
	for _, tr := range Transitions {
		for _, st := range []State{tr.From, tr.To} {
			if !slices.Contains(States, st) {
				t.Errorf("%s → %s (%s): unknown state %q", tr.From, tr.To, tr.Step, st)
			}
		}
		if tr.From == tr.To {
			t.Errorf("%s → %s (%s): a write that keeps the state needs no entry", tr.From, tr.To, tr.Step)
		}
		if tr.Step == "" {
			t.Errorf("%s → %s: no step named", tr.From, tr.To)
		}
		if p := (pair{tr.From, tr.To}); seen[p] {
			t.Errorf("%s → %s listed twice", tr.From, tr.To)
		} else {
			seen[p] = true
		}
		if tr.From.Terminal() && !(tr.From == Failed && (tr.To == Pending || tr.To == Superseded || tr.To == Dismissed)) {
			t.Errorf("%s → %s (%s): moves out of a terminal state; only gcingest retry starts a failed image over, a newer image supersedes it, and the operator dismisses it", tr.From, tr.To, tr.Step)
		}
	}
	next := moves()
	from := reach(next, Pending)
	for _, st := range States {
		if !from[st] {
			t.Errorf("state %s cannot be reached from pending", st)
		}
		if st.Terminal() {
			continue
		}
		out := false
		for r := range reach(next, st) {
			out = out || r.Terminal()
		}
		if !out {
			t.Errorf("state %s has no way out to a terminal state (liveness rule 1)", st)
		}
	}
	for _, st := range Creatable {
		if !slices.Contains(States, st) {
			t.Errorf("Creatable holds unknown state %q", st)
		}
	}
	if !slices.Contains(Creatable, Pending) {
		t.Error("Creatable lacks pending, the state the pipeline records images in")
	}
}

// TestUpdateRefusesUnknownMoves tries every pair of states: Update makes
// exactly the moves in the table (and keeps any state), and a refused move
// commits nothing and names the image and both states.
func TestUpdateRefusesUnknownMoves(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	// paths leads from Pending to each state along the table.
	paths := map[State][]State{Pending: nil}
	for queue := []State{Pending}; len(queue) > 0; queue = queue[1:] {
		for _, to := range moves()[queue[0]] {
			if _, ok := paths[to]; !ok {
				paths[to] = append(slices.Clone(paths[queue[0]]), to)
				queue = append(queue, to)
			}
		}
	}
	for _, from := range States {
		for _, to := range States {
			img := newImage(fmt.Sprintf("%s-%s", from, to))
			if err := s.Create(img); err != nil {
				t.Fatal(err)
			}
			walk(t, s, img.ID, paths[from]...)
			_, err := s.Update(img.ID, func(r *Image) error { r.State, r.LastError = to, "moved"; return nil })
			if got, want := err == nil, Allowed(from, to); got != want {
				t.Errorf("%s → %s: Update err = %v; the table allows it: %v", from, to, err, want)
			}
			if err == nil {
				continue
			}
			if !errors.Is(err, ErrTransition) {
				t.Errorf("%s → %s: err = %v; want one wrapping ErrTransition", from, to, err)
			}
			for _, want := range []string{fmt.Sprintf("image %d ", img.ID), string(from), string(to)} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%s → %s: err %q does not name %q", from, to, err, want)
				}
			}
			got, err := s.Get(img.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.State != from || got.LastError != "" {
				t.Errorf("%s → %s refused, but the record is %s with error %q; want it unchanged", from, to, got.State, got.LastError)
			}
			if imgs, _ := s.List(to); slices.ContainsFunc(imgs, func(i Image) bool { return i.ID == img.ID }) {
				t.Errorf("%s → %s refused, but the state index lists the image under %s", from, to, to)
			}
		}
	}
}

// TestCreateRefusesOtherStates checks that Create records images only in
// the states of Creatable, and that a refused batch records none.
func TestCreateRefusesOtherStates(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	for _, st := range States {
		img := newImage(string(st))
		img.State = st
		err := s.Create(img)
		if got, want := err == nil, slices.Contains(Creatable, st); got != want {
			t.Errorf("Create in %s: err = %v; Creatable holds it: %v", st, err, want)
		}
		if err != nil && !errors.Is(err, ErrTransition) {
			t.Errorf("Create in %s: err = %v; want one wrapping ErrTransition", st, err)
		}
	}
	before, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	ok, bad := newImage("ok"), newImage("bad")
	bad.State = Importing
	if _, err := s.CreateEach([]*Image{ok, bad}, nil); !errors.Is(err, ErrTransition) {
		t.Errorf("CreateEach with an importing image: err = %v; want one wrapping ErrTransition", err)
	}
	after, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(after), len(before); got != want {
		t.Errorf("%d images after a refused CreateEach, want %d: none recorded", got, want)
	}
}

const (
	docPath     = "../docs/ARCHITECTURE.md"
	docSection  = "## States of an item"
	beginMarker = "<!-- transitions: generated from state.Transitions by go test ./state -run TestDoc -update -->"
	endMarker   = "<!-- /transitions -->"
)

// docTable is the transitions table as docs/ARCHITECTURE.md shows it.
func docTable() string {
	var b strings.Builder
	b.WriteString("| from | to | step |\n|---|---|---|\n")
	for _, tr := range Transitions {
		fmt.Fprintf(&b, "| `%s` | `%s` | %s |\n", tr.From, tr.To, strings.ReplaceAll(tr.Step, "|", `\|`))
	}
	return b.String()
}

// TestDoc checks the "States of an item" section of docs/ARCHITECTURE.md
// against the table: its prose names every state, and its table of moves
// is Transitions, which -update writes there.
func TestDoc(t *testing.T) {
	raw, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	start := strings.Index(doc, docSection)
	if start < 0 {
		t.Fatalf("%s has no section %q", docPath, docSection)
	}
	end := len(doc)
	if i := strings.Index(doc[start+len(docSection):], "\n## "); i >= 0 {
		end = start + len(docSection) + i + 1
	}
	section := doc[start:end]
	for _, st := range States {
		if !strings.Contains(section, "`"+string(st)+"`") {
			t.Errorf("%s, %q, does not name state `%s`", docPath, docSection, st)
		}
	}
	b, e := strings.Index(section, beginMarker), strings.Index(section, endMarker)
	if b < 0 || e < b {
		t.Fatalf("%s, %q, lacks the markers\n%s\n%s", docPath, docSection, beginMarker, endMarker)
	}
	got := section[b+len(beginMarker) : e]
	want := "\n" + docTable()
	if got == want {
		return
	}
	if *update {
		out := doc[:start] + section[:b+len(beginMarker)] + want + section[e:] + doc[end:]
		if err := os.WriteFile(docPath, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s's transitions table differs from state.Transitions; run go test ./state -run TestDoc -update\n got:\n%s\nwant:\n%s", docPath, got, want)
}
