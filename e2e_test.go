package main

// End-to-end tests: the real gcingest binary, started as a process against
// the fake server, SIGKILLed at random moments and restarted. What they
// assert is what a user would check in the archive afterwards.

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gcingest/gcingest/folderlock"
	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/state"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// gcingestBinary builds the binary once per test process.
func gcingestBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gcingest-e2e-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "gcingest")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// e2eEnv is one fake server, one drop folder and one config file.
type e2eEnv struct {
	t       *testing.T
	srv     *gcapitest.Server
	dir     string
	drop    string
	done    string
	failed  string
	config  string
	logs    *bytes.Buffer
	logsMu  sync.Mutex
	started int // log offset of the last start
	archive string
	runs    int // agent processes started
}

const e2eInterface = "generic-medical-image"

func newE2E(t *testing.T, opts gcapitest.Options, extraUpload string) *e2eEnv {
	t.Helper()
	srv := gcapitest.NewServer(opts)
	t.Cleanup(srv.Close)
	srv.AddArchive("e2e", "End to end")
	srv.AddInterface(e2eInterface, "Image")

	dir := t.TempDir()
	e := &e2eEnv{t: t, srv: srv, dir: dir, archive: "e2e", logs: new(bytes.Buffer),
		drop: filepath.Join(dir, "drop"), done: filepath.Join(dir, "done"), failed: filepath.Join(dir, "failed")}
	for _, d := range []string{e.drop, e.done, e.failed} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.config = filepath.Join(dir, "config.toml")
	cfg := fmt.Sprintf(`[grand_challenge]
url = %q
token = %q

[state]
path = %q

[upload]
concurrency = 4
part_concurrency = 4
%s

[status]
listen = ""

[log]
level = "debug"

[[watch]]
path = %q
archive = "e2e"
interface = %q
settle = "200ms"
rescan = "1s"
after_upload = "move"
done_dir = %q
failed_dir = %q
`, srv.URL, srv.Token(), filepath.Join(dir, "state", "state.db"), extraUpload, e.drop, e2eInterface, e.done, e.failed)
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// start runs `gcingest run --config` in the background.
func (e *e2eEnv) start() *exec.Cmd {
	e.t.Helper()
	e.started = e.logLen()
	cmd := exec.Command(gcingestBinary(e.t), "run", "--config", e.config)
	w := &lockedWriter{mu: &e.logsMu, buf: e.logs}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Env = append(os.Environ(), "GRAND_CHALLENGE_TOKEN=")
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.runs++
	return cmd
}

func (e *e2eEnv) kill(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
}

// stop sends SIGTERM, once the agent says it is up, and requires a clean
// exit within 10 seconds.
func (e *e2eEnv) stop(cmd *exec.Cmd) {
	e.t.Helper()
	waitFor(e.t, 30*time.Second, "the agent to be up", func() bool {
		return strings.Contains(e.logSince(e.started), "agent up")
	}, e.logTail)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			e.t.Errorf("gcingest run exited with %v after SIGTERM", err)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		e.t.Errorf("gcingest run did not stop within 10s of SIGTERM\n%s", e.logTail())
	}
}

func (e *e2eEnv) logLen() int {
	e.logsMu.Lock()
	defer e.logsMu.Unlock()
	return e.logs.Len()
}

func (e *e2eEnv) logSince(n int) string {
	e.logsMu.Lock()
	defer e.logsMu.Unlock()
	return e.logs.String()[n:]
}

func (e *e2eEnv) logTail() string {
	e.logsMu.Lock()
	defer e.logsMu.Unlock()
	s := e.logs.String()
	if len(s) > 6000 {
		s = "…" + s[len(s)-6000:]
	}
	return s
}

type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool, onFail func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s\n%s", d, what, onFail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countFiles counts regular files under root, ignoring nothing.
// countFiles counts the images and other regular files under root; the
// agent's own folder lock is not one.
func countFiles(root string) int {
	n := 0
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && d.Name() != folderlock.Name {
			n++
		}
		return nil
	})
	return n
}

// recordedUploads returns every upload pk the state file holds.
func (e *e2eEnv) recordedUploads() map[string]bool {
	e.t.Helper()
	st, err := state.Open(filepath.Join(e.dir, "state", "state.db"), state.Options{ReadOnly: true})
	if err != nil {
		e.t.Fatalf("open the state file: %v", err)
	}
	defer st.Close()
	imgs, err := st.List()
	if err != nil {
		e.t.Fatalf("read the state file: %v", err)
	}
	out := map[string]bool{}
	for _, im := range imgs {
		for _, u := range im.Uploads {
			if u.PK != "" {
				out[u.PK] = true
			}
		}
	}
	return out
}

// noteStates counts, from the state file, the states images were left in.
func (e *e2eEnv) noteStates(into map[state.State]int) {
	st, err := state.Open(filepath.Join(e.dir, "state", "state.db"), state.Options{ReadOnly: true})
	if err != nil {
		return // killed before the file was made
	}
	defer st.Close()
	imgs, err := st.Unfinished()
	if err != nil {
		e.t.Fatalf("read the state file after a kill: %v", err)
	}
	for _, im := range imgs {
		into[im.State]++
	}
}

// writeImages drops n small .mha images into subfolders of the drop folder.
func (e *e2eEnv) writeImages(n int) map[string]bool {
	e.t.Helper()
	names := make(map[string]bool)
	for i := range n {
		rel := filepath.Join(fmt.Sprintf("case%03d", i/10), fmt.Sprintf("img%03d.mha", i))
		p := filepath.Join(e.drop, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			e.t.Fatal(err)
		}
		if err := os.WriteFile(p, gcapitest.SampleMHA(int64(i), 8+i%13, 8, 2+i%3), 0o644); err != nil {
			e.t.Fatal(err)
		}
		names[filepath.ToSlash(rel)] = true
	}
	return names
}

// assertExactlyOnce checks what a user would check in the archive: every
// image is there once, none replaced, no multipart upload left open.
func (e *e2eEnv) assertExactlyOnce(want map[string]bool) {
	t := e.t
	t.Helper()
	items := e.srv.Items(e.archive)
	seen := make(map[string]int)
	for _, it := range items {
		v := it.Value(e2eInterface)
		if v == nil || v.Image == nil {
			t.Errorf("item %s (%q) has no image value for %s", it.PK, it.Title, e2eInterface)
		}
		for rel := range want {
			if strings.HasPrefix(it.Title, rel+" [") {
				seen[rel]++
			}
		}
	}
	if len(items) != len(want) {
		t.Errorf("archive holds %d items, want %d (one per image)", len(items), len(want))
	}
	for rel := range want {
		if seen[rel] != 1 {
			t.Errorf("image %s is in the archive %d times, want exactly once", rel, seen[rel])
		}
	}
	// Every image the server built belongs to exactly one item: an extra
	// image would be a value that was replaced (or a duplicate import).
	if got := len(e.srv.Images()); got != len(want) {
		t.Errorf("server built %d images, want %d (a value was replaced or imported twice)", got, len(want))
	}
	// An upload the agent recorded must not be left open. One whose create
	// answer never reached it (killed or stopped mid-request, or a 500 or
	// reset after the server acted) is not its to abort: it never learnt
	// the pk, and the name alone may be another agent's. The server deletes
	// it after 24 hours. There can be at most one such per create in flight
	// when a process ended, or per ambiguous create answer.
	recorded := e.recordedUploads()
	strays, ambiguous := 0, 0
	for _, r := range e.srv.Requests() {
		if r.Method == http.MethodPost && strings.HasSuffix(r.Path, "/uploads/") && (r.Fault == "500" || r.Fault == "reset") {
			ambiguous++
		}
	}
	for _, u := range e.srv.Uploads() {
		if u.Status != gcapi.UploadInitialized {
			continue
		}
		if recorded[u.PK] {
			t.Errorf("multipart upload %s (%s) left Initialized", u.PK, u.Filename)
			continue
		}
		strays++
	}
	if limit := ambiguous + 4*e.runs; strays > limit {
		t.Errorf("%d uploads the agent never recorded left Initialized; want at most %d (4 creates in flight per process ended, plus %d ambiguous answers)", strays, limit, ambiguous)
	}
	if n := countFiles(e.drop); n != 0 {
		t.Errorf("drop folder still holds %d files", n)
	}
	if n := countFiles(e.done); n != len(want) {
		t.Errorf("done_dir holds %d files, want %d", n, len(want))
	}
	for rel := range want {
		if _, err := os.Stat(filepath.Join(e.done, filepath.FromSlash(rel))); err != nil {
			t.Errorf("done_dir lacks %s: %v", rel, err)
		}
	}
	if s := e.srv.Stats(); s.TokenLeaks != 0 {
		t.Errorf("%d requests sent the token to a presigned or redirect URL", s.TokenLeaks)
	}
}

// chaosSize is how many images the kill test drops and how many times it
// stops the agent: enough by default to catch the agent in every state in a
// few seconds of kills, and the long run with GCINGEST_SOAK=1.
func chaosSize() (images, kills int) {
	if os.Getenv("GCINGEST_SOAK") != "" {
		return 300, 24
	}
	return 80, 12
}

func TestE2EKilledAtRandomMomentsLandsEveryImageOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end process test; runs without -short")
	}
	for _, tc := range []struct {
		name   string
		faults gcapitest.Faults
	}{
		{name: "clean network"},
		{name: "20% of requests failing", faults: gcapitest.Faults{
			Rate5xx: 0.08, Rate429: 0.04, RetryAfter: 100 * time.Millisecond, RateReset: 0.04, Rate500: 0.04}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newE2E(t, gcapitest.Options{Seed: 7, ImportDelay: 150 * time.Millisecond}, "")
			e.srv.SetFaults(tc.faults)
			images, kills := chaosSize()
			want := e.writeImages(images)
			rng := rand.New(rand.NewPCG(42, uint64(len(tc.name))))
			atKill := map[state.State]int{}
			for i := range kills {
				cmd := e.start()
				time.Sleep(time.Duration(100+rng.IntN(1400)) * time.Millisecond) // a random moment, not a wait
				if i%6 == 5 {
					// Every sixth stop is a SIGTERM in the middle of the
					// work: it must end cleanly and quickly too.
					e.stop(cmd)
					continue
				}
				e.kill(cmd)
				e.noteStates(atKill)
			}
			t.Logf("states of images caught in flight by the kills: %v", atKill)
			cmd := e.start()
			waitFor(t, 8*time.Minute, "every image moved to done_dir", func() bool {
				return countFiles(e.done) == len(want) && countFiles(e.drop) == 0
			}, e.logTail)
			e.stop(cmd)
			e.srv.SetFaults(gcapitest.Faults{})
			e.assertExactlyOnce(want)

			// A restart with nothing new creates nothing. Its one create
			// request is the start-up's proof of upload rights, which the
			// server refuses for its values (gcapi.Client.CanUpload).
			before := e.srv.Stats()
			logStart := e.logLen()
			cmd = e.start()
			waitFor(t, time.Minute, "the restarted agent to finish its first scan and one periodic rescan", func() bool {
				return strings.Count(e.logSince(logStart), "rescan done") >= 2
			}, e.logTail)
			e.stop(cmd)
			const probes = 1
			if after := e.srv.Stats(); after.Creates != before.Creates+probes || after.UploadCreates != before.UploadCreates {
				t.Errorf("restart with nothing new sent %d create requests to the server, want only the %d upload-rights probe", after.Creates-before.Creates, probes)
			}
		})
	}
}

func TestE2EHalfSentUploadResumesAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end process test; runs without -short")
	}
	e := newE2E(t, gcapitest.Options{Seed: 3}, `part_size = "5MiB"`)
	const size = 300 << 20
	p := filepath.Join(e.drop, "big.mha")
	writeBigMHA(t, p, size)

	cmd := e.start()
	waitFor(t, 3*time.Minute, "half of the file to reach the server", func() bool {
		return e.srv.Stats().PartBytes >= size/2
	}, e.logTail)
	e.kill(cmd)
	sentBefore := e.srv.Stats().PartBytes

	cmd = e.start()
	waitFor(t, 3*time.Minute, "the file to be moved to done_dir", func() bool {
		return countFiles(e.done) == 1
	}, e.logTail)
	e.stop(cmd)

	total := e.srv.Stats().PartBytes
	t.Logf("sent %d MiB before the kill, %d MiB in total for a %d MiB file", sentBefore>>20, total>>20, size>>20)
	if float64(total) >= 1.5*size {
		t.Errorf("sent %d bytes in total for a %d-byte file; the resume started over instead of using the parts the server held", total, size)
	}
	e.assertExactlyOnce(map[string]bool{"big.mha": true})
}

// writeBigMHA writes a valid MetaIO image of about size bytes without
// holding it in memory.
func writeBigMHA(t *testing.T, path string, size int64) {
	t.Helper()
	const w, h = 1024, 1024
	d := size / (w * h)
	header := fmt.Sprintf("ObjectType = Image\nNDims = 3\nDimSize = %d %d %d\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n", w, h, d)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(header); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1<<20)
	for range d {
		for i := 0; i < len(buf); i += 8 {
			v := rng.Uint64()
			for j := 0; j < 8; j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestE2EPullReproducesArchiveAndResumes(t *testing.T) {
	e := newE2E(t, gcapitest.Options{Seed: 5}, "")
	e.srv.AddInterface("report", "PDF file")
	e.srv.AddInterface("lung-volume", "Float")
	want := map[string][]byte{} // path under out → content
	for i := range 6 {
		title := fmt.Sprintf("case %02d", i)
		it := e.srv.AddItem("e2e", title)
		img := gcapitest.SampleMHA(int64(100+i), 9, 9, 3)
		if err := e.srv.AddImageValue(it.PK, e2eInterface, fmt.Sprintf("c%d.mha", i), img); err != nil {
			t.Fatal(err)
		}
		want[filepath.Join(title, e2eInterface+".mha")] = img
		if i%2 == 0 {
			pdf := []byte(fmt.Sprintf("%%PDF-1.4 report %d\n", i))
			if err := e.srv.AddFileValue(it.PK, "report", "report.pdf", pdf); err != nil {
				t.Fatal(err)
			}
			want[filepath.Join(title, "report.pdf")] = pdf
		}
		if err := e.srv.SetValue(it.PK, "lung-volume", []byte(fmt.Sprintf("%d.5", i))); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(e.dir, "pulled")
	pull := func() string {
		t.Helper()
		cmd := exec.Command(gcingestBinary(t), "pull", "--config", e.config, "--archive", "e2e", "--out", out)
		got, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("gcingest pull: %v\n%s", err, got)
		}
		return string(got)
	}
	pull()
	for rel, content := range want {
		got, err := os.ReadFile(filepath.Join(out, rel))
		if err != nil {
			t.Errorf("pulled archive lacks %s: %v", rel, err)
			continue
		}
		if !bytes.Equal(got, content) {
			t.Errorf("%s: pulled %d bytes that differ from the %d uploaded", rel, len(got), len(content))
		}
	}
	vals, err := os.ReadFile(filepath.Join(out, "case 03", "values.json"))
	if err != nil || !strings.Contains(string(vals), `"lung-volume": 3.5`) {
		t.Errorf("case 03/values.json = %q, %v; want it to hold lung-volume 3.5", vals, err)
	}
	before := e.srv.Stats().Downloads
	second := pull()
	if d := e.srv.Stats().Downloads - before; d != 0 {
		t.Errorf("a second pull downloaded %d files; want none (all complete)\n%s", d, second)
	}
}

func TestE2EFailedImportIsExplainedAndRetried(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end process test; runs without -short")
	}
	e := newE2E(t, gcapitest.Options{Seed: 9}, "")
	e.srv.SetFaults(gcapitest.Faults{FailImport: func(names []string) string {
		for _, n := range names {
			if strings.HasPrefix(n, "bad") {
				return "1 file could not be imported"
			}
		}
		return ""
	}})
	for _, name := range []string{"good.mha", "bad.mha"} {
		if err := os.WriteFile(filepath.Join(e.drop, name), gcapitest.SampleMHA(int64(len(name)), 8, 8, 2), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := e.start()
	note := filepath.Join(e.failed, "bad.mha.error.txt")
	waitFor(t, time.Minute, "good.mha in done_dir and bad.mha in failed_dir with its note", func() bool {
		_, errNote := os.Stat(note)
		return countFiles(e.done) == 1 && errNote == nil
	}, e.logTail)
	e.stop(cmd)
	why, _ := os.ReadFile(note)
	if !strings.Contains(string(why), "1 file could not be imported") {
		t.Errorf("%s does not give the server's words:\n%s", note, why)
	}

	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(gcingestBinary(t), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("gcingest %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	st := run("status", "--config", e.config)
	if !strings.Contains(st, "failed") || !strings.Contains(st, "bad.mha") {
		t.Errorf("gcingest status does not show bad.mha as failed:\n%s", st)
	}
	// Its item was created before the import failed, and the API cannot
	// delete it: status counts it, status ID names it for removal.
	if !strings.Contains(st, "1 item left empty in the archive") {
		t.Errorf("gcingest status does not count the item bad.mha left empty:\n%s", st)
	}
	var badID string
	for _, l := range strings.Split(st, "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[1] == "failed" && strings.Contains(l, "bad.mha") {
			badID = f[0]
		}
	}
	if one := run("status", "--config", e.config, badID); !strings.Contains(one, "left empty in the archive") {
		t.Errorf("gcingest status %s does not name the item left empty:\n%s", badID, one)
	}
	// The cause is fixed (here: the server accepts it now); retry with the
	// agent stopped, then start it.
	e.srv.SetFaults(gcapitest.Faults{})
	if out := run("retry", "--config", e.config, "--failed"); !strings.Contains(out, "queued 1") {
		t.Errorf("gcingest retry --failed said %q; want one image queued", out)
	}
	if _, err := os.Stat(filepath.Join(e.drop, "bad.mha")); err != nil {
		t.Errorf("retry did not move bad.mha back into the drop folder: %v", err)
	}
	cmd = e.start()
	waitFor(t, time.Minute, "bad.mha to land after the retry", func() bool {
		return countFiles(e.done) == 2
	}, e.logTail)
	e.stop(cmd)
	if items := e.srv.Items(e.archive); len(items) != 2 {
		t.Errorf("archive holds %d items after the retry, want 2", len(items))
	}
}

// TestE2EUnreadableFileFailsWithReason runs the agent as an unprivileged
// user (nobody, when the tests run as root, as in CI, where permission bits
// would not stop root), so that a file it may not read is really unreadable.
func TestE2EUnreadableFileFailsWithReason(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end process test; runs without -short")
	}
	e := newE2E(t, gcapitest.Options{Seed: 11}, "")
	for _, name := range []string{"ok.mha", "locked.mha"} {
		if err := os.WriteFile(filepath.Join(e.drop, name), gcapitest.SampleMHA(int64(len(name)), 8, 8, 2), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(e.drop, "locked.mha"), 0); err != nil {
		t.Fatal(err)
	}
	const nobody = 65534
	asNobody := os.Geteuid() == 0
	if asNobody {
		// The agent's folders are its own; the binary and the folders above
		// them must be reachable for it.
		for _, d := range []string{e.drop, e.done, e.failed, filepath.Join(e.dir, "state")} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(d, nobody, nobody); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chown(filepath.Join(e.drop, "ok.mha"), nobody, nobody); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(e.config, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{e.dir, filepath.Dir(e.dir), filepath.Dir(gcingestBinary(t))} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	cmd := exec.Command(gcingestBinary(t), "run", "--config", e.config)
	if asNobody {
		runAs(cmd, nobody, nobody)
	}
	w := &lockedWriter{mu: &e.logsMu, buf: e.logs}
	cmd.Stdout, cmd.Stderr = w, w
	e.started = e.logLen()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	note := filepath.Join(e.failed, "locked.mha.error.txt")
	waitFor(t, time.Minute, "ok.mha uploaded and locked.mha failed with a note", func() bool {
		_, err := os.Stat(note)
		return countFiles(e.done) == 1 && err == nil
	}, e.logTail)
	e.stop(cmd)
	why, _ := os.ReadFile(note)
	if !strings.Contains(string(why), "permission denied") || !strings.Contains(string(why), "locked.mha") {
		t.Errorf("%s should name the file and the cause:\n%s", note, why)
	}
	if !strings.Contains(e.logTail(), "locked.mha") {
		t.Errorf("the log does not name locked.mha:\n%s", e.logTail())
	}
	if n := len(e.srv.Items(e.archive)); n != 1 {
		t.Errorf("archive holds %d items, want 1 (only the readable file)", n)
	}
}

// TestE2EStateOnFullDisk puts the state file on a tiny file system, fills
// it, and checks that the agent stops saying why, loses nothing, and lands
// every image once after space is freed. Mounting needs root (CI runs so).
func TestE2EStateOnFullDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end process test; runs without -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs for the state file (CI runs as root)")
	}
	e := newE2E(t, gcapitest.Options{Seed: 13}, "")
	stateDir := filepath.Join(e.dir, "state")
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", stateDir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s)", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", stateDir).Run() })

	// Leave room for the state file's first pages, not for 120 images.
	filler := filepath.Join(stateDir, "filler")
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=64k", "count=30").CombinedOutput(); err != nil {
		t.Fatalf("fill the tmpfs: %v\n%s", err, out)
	}
	want := e.writeImages(120)

	cmd := e.start()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err == nil {
			t.Errorf("the agent exited 0 with its state file on a full disk")
		}
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-exited
		t.Fatalf("the agent kept running with a state file it cannot write\n%s", e.logTail())
	}
	if log := e.logTail(); !strings.Contains(log, "no space left on device") || !strings.Contains(log, "free disk space") {
		t.Errorf("the log does not say the disk is full and what to do:\n%s", log)
	}
	landed := countFiles(e.done)
	t.Logf("%d of %d images had landed when the state file could not grow", landed, len(want))
	if n := countFiles(e.drop); n == 0 {
		t.Fatalf("every file left the drop folder although the state file could not be written")
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	cmd = e.start()
	waitFor(t, 2*time.Minute, "every image moved to done_dir after space was freed", func() bool {
		return countFiles(e.done) == len(want) && countFiles(e.drop) == 0
	}, e.logTail)
	e.stop(cmd)
	e.assertExactlyOnce(want)
}

func TestE2ECorruptStateFileRefusesToStart(t *testing.T) {
	e := newE2E(t, gcapitest.Options{Seed: 17}, "")
	e.writeImages(3)
	dbPath := filepath.Join(e.dir, "state", "state.db")
	if err := os.MkdirAll(filepath.Dir(dbPath), 0o755); err != nil {
		t.Fatal(err)
	}
	garbage := bytes.Repeat([]byte("not a bbolt file "), 2000)
	if err := os.WriteFile(dbPath, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(gcingestBinary(t), "run", "--config", e.config).CombinedOutput()
	if err == nil {
		t.Fatalf("gcingest run started on a damaged state file:\n%s", out)
	}
	if !strings.Contains(string(out), dbPath) || !strings.Contains(string(out), "mv ") {
		t.Errorf("the error should name %s and say how to move it aside:\n%s", dbPath, out)
	}
	if got, _ := os.ReadFile(dbPath); !bytes.Equal(got, garbage) {
		t.Errorf("the damaged state file was changed")
	}
	if s := e.srv.Stats(); s.Creates != 0 {
		t.Errorf("%d creating requests were made with a damaged state file", s.Creates)
	}
}

func TestE2ESIGHUPAppliesAWatchListWithoutRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end process test; runs without -short")
	}
	e := newE2E(t, gcapitest.Options{Seed: 19}, "")
	cmd := e.start()
	waitFor(t, 30*time.Second, "the agent to be up", func() bool {
		return strings.Contains(e.logSince(e.started), "agent up")
	}, e.logTail)

	second := filepath.Join(e.dir, "drop2")
	if err := os.MkdirAll(second, 0o755); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	// A reload naming an archive the server does not know is refused, and
	// the agent goes on with what it had.
	bad := fmt.Sprintf("%s\n[[watch]]\npath = %q\narchive = \"no-such-archive\"\ninterface = %q\n", good, second, e2eInterface)
	if err := os.WriteFile(e.config, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the bad reload to be refused", func() bool {
		return strings.Contains(e.logSince(e.started), "new watch list is refused")
	}, e.logTail)
	if err := os.WriteFile(filepath.Join(e.drop, "still.mha"), gcapitest.SampleMHA(78, 8, 8, 2), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the first watch to keep working after a refused reload", func() bool {
		return countFiles(e.done) == 1
	}, e.logTail)
	// Checked before anything stopped: the running pipeline and watchers
	// were never restarted.
	if n := strings.Count(e.logSince(e.started), "agent up"); n != 1 {
		t.Errorf("the agent came up %d times around a refused reload; want once (it must check before it stops)", n)
	}
	if err := os.WriteFile(e.config, good, 0o600); err != nil {
		t.Fatal(err)
	}

	f, err := os.OpenFile(e.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n[[watch]]\npath = %q\narchive = \"e2e\"\ninterface = %q\nsettle = \"200ms\"\n", second, e2eInterface)
	f.Close()
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(second, "late.mha"), gcapitest.SampleMHA(77, 8, 8, 2), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "an image dropped into the watch added by SIGHUP to reach the archive", func() bool {
		for _, it := range e.srv.Items(e.archive) {
			if strings.HasPrefix(it.Title, "late.mha [") && it.Value(e2eInterface) != nil {
				return true
			}
		}
		return false
	}, e.logTail)
	if cmd.ProcessState != nil {
		t.Fatalf("the agent exited on SIGHUP")
	}
	e.stop(cmd)
}

func TestE2EPlanMarksWhatIsAlreadyRecorded(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end process test; runs without -short")
	}
	e := newE2E(t, gcapitest.Options{Seed: 23}, "")
	cfg, _ := os.ReadFile(e.config)
	cfg = bytes.Replace(cfg, []byte(`after_upload = "move"`), []byte(`after_upload = "keep"`), 1)
	cfg = bytes.Replace(cfg, []byte(fmt.Sprintf("done_dir = %q\n", e.done)), nil, 1)
	if err := os.WriteFile(e.config, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a.mha", "b.mha"} {
		if err := os.WriteFile(filepath.Join(e.drop, name), gcapitest.SampleMHA(int64(len(name)+int(name[0])), 8, 8, 2), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := e.start()
	waitFor(t, time.Minute, "both images in the archive", func() bool {
		items := e.srv.Items(e.archive)
		for _, it := range items {
			if v := it.Value(e2eInterface); v == nil || v.Image == nil {
				return false
			}
		}
		return len(items) == 2
	}, e.logTail)
	e.stop(cmd)

	out := runOut(t, "plan", "--config", e.config)
	if !strings.Contains(out, "0 ready") || !strings.Contains(out, "2 already recorded") {
		t.Errorf("plan after both kept files were uploaded:\n%s\nwant 0 ready, 2 already recorded", out)
	}
	// New content under an old name is new work.
	later := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(e.drop, "b.mha"), later, later); err != nil {
		t.Fatal(err)
	}
	out = runOut(t, "plan", "--config", e.config)
	if !strings.Contains(out, "1 ready") || !strings.Contains(out, "1 already recorded") {
		t.Errorf("plan after b.mha changed:\n%s\nwant 1 ready, 1 already recorded", out)
	}
}

// runOut runs the gcingest binary and returns its output; a non-zero exit
// fails the test.
func runOut(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(gcingestBinary(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("gcingest %v: %v\n%s", args, err, out)
	}
	return string(out)
}
