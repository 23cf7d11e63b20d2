package ingest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/state"
)

// resumableV2 reports whether a schema-2 record can be resumed against a
// fresh fake server: it refers to nothing the server it was written
// against created (the fake server keeps no state across processes). A
// pending record, an uploading one whose uploads have no pk yet, one whose
// only work left is its after-upload action, and a settled one qualify.
func resumableV2(img state.Image) bool {
	switch {
	case !img.Unfinished():
		return true
	case img.State == state.Pending:
		return true
	case img.State == state.Uploading:
		for _, u := range img.Uploads {
			if u.PK != "" {
				return false
			}
		}
		return true
	case img.State == state.Done:
		return true // the after-upload action needs no server
	}
	return false
}

// TestResumeAfterV2Upgrade upgrades the schema-2 fixtures whose records a
// fresh server can resume (see resumableV2), recreates the drop folder
// they were written for (same paths, contents and modification times), and
// runs this build's pipeline on them to the end: every image and folder
// item is finished, each in the archive once, no upload left open.
func TestResumeAfterV2Upgrade(t *testing.T) {
	// Not parallel: it recreates the fixtures' drop folders at the paths
	// they recorded, outside its temporary folder.
	workloads := map[string]func(*testing.T) (*harness, []Group){
		"images": v2Images, "folders": crashFolders, "action": v2Images,
	}
	fixtures, err := filepath.Glob(filepath.Join("testdata", "statev2", "*.db"))
	if err != nil {
		t.Fatal(err)
	}
	resumed := map[string]int{} // by kind
	for _, fx := range fixtures {
		name := strings.TrimSuffix(filepath.Base(fx), ".db")
		wl, _, _ := strings.Cut(name, "-")
		setup, ok := workloads[wl]
		if !ok {
			continue
		}
		t.Run(name, func(t *testing.T) {
			h, _ := setup(t) // the fresh server, and the drop files' contents
			h.store.Close()
			if err := copyFileTo(fx, h.statePath); err != nil {
				t.Fatal(err)
			}
			h.open()
			imgs, err := h.store.List()
			if err != nil {
				t.Fatal(err)
			}
			for _, img := range imgs {
				if !resumableV2(img) {
					t.Skipf("image %d (%s) is %s with server state a fresh server lacks", img.ID, img.Kind, img.State)
				}
			}
			// Recreate the fixture's drop folder where it was.
			root := filepath.Dir(imgs[0].Watch)
			if _, err := os.Stat(root); err == nil {
				t.Skipf("%s exists; not touching it", root)
			}
			if err := os.MkdirAll(root, 0o755); err != nil {
				t.Skipf("cannot recreate the fixture's folder %s: %v", root, err)
			}
			t.Cleanup(func() { os.RemoveAll(root) })
			for _, img := range imgs {
				if !img.Unfinished() {
					continue
				}
				for _, f := range img.Files {
					b, err := os.ReadFile(filepath.Join(h.watch.Path, filepath.FromSlash(f.Rel)))
					if err != nil {
						t.Fatal(err)
					}
					if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(f.Path, b, 0o644); err != nil {
						t.Fatal(err)
					}
					if err := os.Chtimes(f.Path, f.ModTime, f.ModTime); err != nil {
						t.Fatal(err)
					}
				}
			}
			cfg := h.config()
			w := h.watch
			w.Path = imgs[0].Watch
			cfg.Watches = []Watch{w}
			cfg.SpoolDir = filepath.Join(root, "state", "spool")
			p := h.pipeline(cfg)
			stop := start(p)
			after := h.waitSettled(len(imgs))
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			items := map[string]int{}
			for i, img := range after {
				was := imgs[i]
				if !was.Unfinished() {
					if img.State != was.State || img.Updated != was.Updated {
						t.Errorf("settled image %d changed: %s, was %s", img.ID, img.State, was.State)
					}
					continue
				}
				if was.State == state.Pending && img.Key == "big.mha" {
					// The workload's big.mha is a small image with 6 MiB
					// appended: this build's completeness proof, run when
					// a file is hashed, fails it (images hashed before the
					// upgrade go on as they were).
					if img.State != state.Failed || !strings.Contains(img.LastError, "longer than its header says") {
						t.Errorf("image %d (big.mha, was pending) is %s (%s); want failed as longer than its header says", img.ID, img.State, img.LastError)
					}
					continue
				}
				if img.State != state.Finished {
					t.Errorf("image %d (%s, was %s) is %s (%s); want finished", img.ID, img.Kind, was.State, img.State, img.LastError)
					continue
				}
				resumed[img.Kind]++
				if was.State != state.Done {
					items[img.ItemPK]++
				}
				for _, v := range img.Values {
					if v.Interface == "" || !v.Confirmed {
						t.Errorf("image %d value %+v: want its interface and confirmed", img.ID, v)
					}
				}
			}
			for pk, n := range items {
				if n != 1 && pk != "" {
					t.Errorf("item %s holds %d of the resumed images; want 1", pk, n)
				}
			}
			for _, u := range h.srv.Uploads() {
				if u.Status == gcapi.UploadInitialized {
					t.Errorf("upload %s (%s) left Initialized", u.PK, u.Filename)
				}
			}
			for _, it := range h.srv.Items(testArchive) {
				if len(it.Values) == 0 && it.Title != "existing" {
					t.Errorf("item %q was created but holds no value", it.Title)
				}
			}
		})
	}
	for _, kind := range []string{"single", "mhd", "zip", "folder"} {
		if resumed[kind] == 0 {
			t.Errorf("no %s record was resumed after the upgrade; want each kind", kind)
		}
	}
}

func copyFileTo(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o600)
}
