package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/ingest"
	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/status"
)

// The status JSON says what a waiting image waits for and until when.
func TestStatusImageShowsWhatItWaitsFor(t *testing.T) {
	until := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	si := statusImage(state.Image{ID: 7, State: state.Importing, WaitingFor: "the server to attach ct-image to archive item x", Until: until})
	b, err := json.Marshal(si)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"waiting_for":"the server to attach ct-image to archive item x"`, `"until":"2026-01-02T03:04:05Z"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("status JSON %s lacks %s", b, want)
		}
	}
}

// A name that is not valid UTF-8 is shown escaped by `gcingest status`
// with no agent running, as the running agent's snapshot shows it
// (ingest.EscapedNames), not as U+FFFD; the state file keeps the bytes.
func TestStatusFromStateEscapesNames(t *testing.T) {
	dir := t.TempDir()
	name := "scan-\xff.mha"
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("image"), 0o600); err != nil {
		t.Skipf("this file system refuses a name that is not valid UTF-8: %v", err)
	}
	statePath := filepath.Join(t.TempDir(), "state.db")
	st, err := state.Open(statePath, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	img := state.Image{Watch: dir, Key: name, Files: []state.File{{Rel: name, Path: path, Size: 5}},
		Values: []state.Value{{Interface: "ct-image", Kind: "image", Files: []string{name}}}}
	if err := st.Create(&img); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	for _, q := range []status.Query{{}, {ID: strconv.FormatUint(img.ID, 10)}} {
		rep, err := StatusFromState(statePath, q, "test")
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Images) != 1 {
			t.Fatalf("query %+v: got %d images, want 1", q, len(rep.Images))
		}
		got := rep.Images[0]
		want := ingest.EscapedNames(img)
		if got.Key != want.Key || got.Watch != want.Watch || len(got.Files) != 1 || got.Files[0] != want.Files[0].Rel {
			t.Errorf("query %+v: key %q, watch %q, files %q; want %q, %q, [%q] as the agent shows them",
				q, got.Key, got.Watch, got.Files, want.Key, want.Watch, want.Files[0].Rel)
		}
		if got.Key != `scan-\xff.mha` {
			t.Errorf("query %+v: key %q, want the invalid byte escaped", q, got.Key)
		}
		if q.ID == "" {
			continue
		}
		d := got.Detail
		if d == nil || len(d.Files) != 1 || d.Files[0].Path != want.Files[0].Path || d.Files[0].Rel != `scan-\xff.mha` {
			t.Errorf("detail files %+v; want the path %q escaped", d, want.Files[0].Path)
		} else if len(d.Values) != 1 || len(d.Values[0].Files) != 1 || d.Values[0].Files[0] != `scan-\xff.mha` {
			t.Errorf("detail values %+v; want the value's file escaped", d.Values)
		}
	}

	// The record still names the real file.
	st, err = state.Open(statePath, state.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec, err := st.Get(img.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rec.Files[0].Path); err != nil {
		t.Errorf("the record no longer names the file: %v", err)
	}
}

// An image whose request the client is retrying is shown as retrying,
// with the client's next attempt and its error, although its record
// still says uploading.
func TestStatusShowsClientRetriesAsRetrying(t *testing.T) {
	st, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	img := &state.Image{Watch: "/drop", Key: "a.mha", State: state.Pending}
	if err := st.Create(img); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(img.ID, func(r *state.Image) error { r.State = state.Uploading; return nil }); err != nil {
		t.Fatal(err)
	}
	next := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	active := map[uint64]ingest.ImageStatus{img.ID: {Active: true, ClientRetryAt: next, ClientRetryErr: "GET …: 503 Service Unavailable"}}
	rep, err := reportFrom(st, status.Query{}, active, "test")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Images) != 1 {
		t.Fatalf("report %+v; want one image", rep.Images)
	}
	si := rep.Images[0]
	if si.State != status.StateRetrying || !si.NextAttempt.Equal(next) || !strings.Contains(si.LastError, "503") {
		t.Errorf("image shown %s, next %v, error %q; want retrying at %v with the 503", si.State, si.NextAttempt, si.LastError, next)
	}
}
