package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/state"
)

// schemaV2Rev is the last commit of main whose gcingest wrote state schema
// 2 (before the one item state machine).
const schemaV2Rev = "caa4cfca1a2fcc62df7d49cc0bf2fdc3be792f35"

// gcingestAt builds gcingest as it was at rev, from this repository's
// history. It skips the test when the history is not there (a shallow
// clone, an export without .git), except under CI=true, where a skip would
// pass the upgrade unchecked: there it fails.
func gcingestAt(t *testing.T, rev string) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(dir, "src.tar")
	if out, err := exec.Command("git", "archive", "--format=tar", "-o", tarball, rev).CombinedOutput(); err != nil {
		skipOutsideCI(t, "commit %s is not in this checkout's history (%v: %s); CI needs a clone with history", rev, err, out)
	}
	if out, err := exec.Command("tar", "-x", "-f", tarball, "-C", src).CombinedOutput(); err != nil {
		skipOutsideCI(t, "unpack commit %s: %v: %s", rev, err, out)
	}
	bin := filepath.Join(dir, "gcingest-"+rev[:7])
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build gcingest at %s: %v\n%s", rev, err, out)
	}
	return bin
}

// skipOutsideCI skips the test, or under CI=true fails it.
func skipOutsideCI(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// TestE2EUpgradeFromSchemaV2 runs the gcingest of state schema 2 over lone
// images and folder items, SIGKILLs it at random moments, and lets this
// build take over the same state file and drop folders: every image and
// every folder lands exactly once, none replaced, no upload left open.
func TestE2EUpgradeFromSchemaV2(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end process test; runs without -short")
	}
	old := gcingestAt(t, schemaV2Rev)
	e := newE2E(t, gcapitest.Options{Seed: 29, ImportDelay: 150 * time.Millisecond}, `part_size = "5MiB"`)
	const folderArchive, report = "e2e-folders", "report"
	e.srv.AddArchive(folderArchive, "Folders")
	e.srv.AddInterface(report, "PDF file")
	folders := filepath.Join(e.dir, "folders")
	foldersDone := filepath.Join(e.dir, "folders-done")
	for _, d := range []string{folders, foldersDone} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(e.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, `
[[watch]]
path = %q
archive = %q
interface = %q
group = "folder"
settle = "200ms"
rescan = "1s"
after_upload = "move"
done_dir = %q
[watch.values]
"*.pdf" = %q
`, folders, folderArchive, e2eInterface, foldersDone, report)
	f.Close()

	want := e.writeImages(120)
	// Three-part images: killed while uploading, they leave recorded
	// upload pks and parts for this build to resume.
	for i := range 3 {
		rel := fmt.Sprintf("big/big%d.mha", i)
		if err := os.MkdirAll(filepath.Join(e.drop, "big"), 0o755); err != nil {
			t.Fatal(err)
		}
		b := append(gcapitest.SampleMHA(int64(500+i), 8, 8, 2), make([]byte, 12<<20)...)
		if err := os.WriteFile(filepath.Join(e.drop, filepath.FromSlash(rel)), b, 0o644); err != nil {
			t.Fatal(err)
		}
		want[rel] = true
	}
	const nFolders = 8
	for i := range nFolders {
		dir := filepath.Join(folders, fmt.Sprintf("case%02d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		pdf := append([]byte("%PDF-1.4\n"), []byte(strings.Repeat(fmt.Sprint(i), 200))...)
		for name, b := range map[string][]byte{"ct.mha": gcapitest.SampleMHA(int64(100+i), 8, 8, 2), "report.pdf": pdf} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}

	// The old agent, killed at random moments, leaves records in every
	// state of both kinds.
	rng := rand.New(rand.NewPCG(29, 2))
	atKill := map[state.State]int{}
	for range 6 {
		e.started = e.logLen()
		cmd := exec.Command(old, "run", "--config", e.config)
		w := &lockedWriter{mu: &e.logsMu, buf: e.logs}
		cmd.Stdout, cmd.Stderr = w, w
		cmd.Env = append(os.Environ(), "GRAND_CHALLENGE_TOKEN=")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond) // a random moment, not a wait
		e.kill(cmd)
		e.noteStatesV2(atKill)
	}
	t.Logf("states left by the schema-2 agent: %v", atKill)

	// This build upgrades the file and finishes the work.
	cmd := e.start()
	waitFor(t, 5*time.Minute, "every image and folder moved to its done_dir", func() bool {
		return countFiles(e.done) == len(want) && countFiles(e.drop) == 0 &&
			countFiles(foldersDone) == 2*nFolders && countFiles(folders) == 0
	}, e.logTail)
	e.stop(cmd)

	items := e.srv.Items(e.archive)
	if len(items) != len(want) {
		t.Errorf("image archive holds %d items, want %d", len(items), len(want))
	}
	titles := map[string]int{}
	for _, it := range items {
		titles[it.Title]++
		if v := it.Value(e2eInterface); v == nil || v.Image == nil {
			t.Errorf("item %q has no image", it.Title)
		}
	}
	for title, n := range titles {
		if n != 1 {
			t.Errorf("title %q is on %d items, want 1", title, n)
		}
	}
	fitems := e.srv.Items(folderArchive)
	if len(fitems) != nFolders {
		t.Errorf("folder archive holds %d items, want %d", len(fitems), nFolders)
	}
	for _, it := range fitems {
		if v := it.Value(e2eInterface); v == nil || v.Image == nil {
			t.Errorf("folder item %q has no image", it.Title)
		}
		if v := it.Value(report); v == nil || v.File == nil {
			t.Errorf("folder item %q has no report", it.Title)
		}
	}
	if got, want := len(e.srv.Images()), len(want)+nFolders; got != want {
		t.Errorf("server built %d images, want %d (a value replaced or imported twice)", got, want)
	}
	// An upload recorded in the state file must not be left open. The
	// schema-2 agent sent one-part files before it recorded their upload
	// (its filename-based orphan scan, which this build dropped because it
	// could abort another agent's upload, cleaned them up on its next
	// start): those, and creates in flight at a kill, are not this build's
	// to abort. The server deletes them after 24 hours. At most one per
	// worker (4) per process ended: 6 old ones and this one.
	recorded := e.recordedUploads()
	strays := 0
	for _, u := range e.srv.Uploads() {
		switch {
		case u.Status != gcapi.UploadInitialized:
		case recorded[u.PK]:
			t.Errorf("multipart upload %s (%s) left Initialized", u.PK, u.Filename)
		default:
			strays++
		}
	}
	if limit := 4 * (6 + 1); strays > limit {
		t.Errorf("%d uploads no state records left Initialized; want at most %d", strays, limit)
	}
	st, err := state.Open(filepath.Join(e.dir, "state", "state.db"), state.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	imgs, err := st.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range imgs {
		if im.State != state.Finished {
			t.Errorf("record %d (%s %s) is %s (%s), want finished", im.ID, im.Kind, im.Key, im.State, im.LastError)
		}
	}
}

// noteStatesV2 counts the states of a schema-2 state file's records,
// which this build reads only after upgrading a copy.
func (e *e2eEnv) noteStatesV2(into map[state.State]int) {
	src := filepath.Join(e.dir, "state", "state.db")
	b, err := os.ReadFile(src)
	if err != nil {
		return // killed before the file was made
	}
	cp := filepath.Join(e.t.TempDir(), "copy.db")
	if err := os.WriteFile(cp, b, 0o600); err != nil {
		e.t.Fatal(err)
	}
	st, err := state.Open(cp, state.Options{})
	if err != nil {
		e.t.Fatalf("upgrade a copy of the schema-2 state file: %v", err)
	}
	defer st.Close()
	imgs, err := st.Unfinished()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, im := range imgs {
		st := im.Kind + ":" + string(im.State)
		for _, u := range im.Uploads {
			if u.PK != "" && !u.Completed {
				st += "(open upload)"
				break
			}
		}
		into[state.State(st)]++
	}
}
