package ingest

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/state"
)

// The state files in testdata/statev2 were written by gcingest with state
// schema version 2 (the code before the one item state machine), so that
// the upgrade to later versions is tested on files real users have:
//
//	go test ./ingest/ -run TestWriteStateV2Fixtures -args -write-state-v2
//
// It only makes sense on a build whose state.SchemaVersion is 2; once the
// schema moved on, the files are kept as they are.
var writeStateV2 = flag.Bool("write-state-v2", false, "rewrite ingest/testdata/statev2 from a schema-2 build")

// TestWriteStateV2Fixtures runs the crash workloads (lone images of each
// kind, folder items, a failed image, a duplicate, transient faults) and
// kills each run at its n-th event for every n; after each kill it keeps a
// copy of the state file if it shows a (kind, state) pair no earlier copy
// showed. The copies cover records of both kinds at every state.
func TestWriteStateV2Fixtures(t *testing.T) {
	// Not parallel: it rewrites testdata.
	if !*writeStateV2 {
		t.Skip("run with -args -write-state-v2 to rewrite testdata/statev2")
	}
	if state.SchemaVersion != 2 {
		t.Skipf("this build writes state schema %d; the fixtures must come from a schema-2 build", state.SchemaVersion)
	}
	out := filepath.Join("testdata", "statev2")
	if err := os.RemoveAll(out); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var manifest []string
	workloads := []struct {
		name  string
		setup func(t *testing.T) (*harness, []Group)
	}{
		{"images", v2Images},
		{"folders", crashFolders},
		{"faults", func(t *testing.T) (*harness, []Group) {
			h, groups := v2Images(t)
			h.srv.SetFaults(gcapitest.Faults{Rate5xx: 0.2, RetryAfter: time.Millisecond})
			return h, groups
		}},
		{"duplicate", v2Duplicate},
		{"folderfaults", func(t *testing.T) (*harness, []Group) {
			h, groups := crashFolders(t)
			groups = append(groups, h.folder("bad", map[string][]byte{
				"ct.mha":      gcapitest.SampleMHA(3, 4, 4, 2),
				"values.json": []byte(`{"lung-volume": `),
			}))
			h.srv.SetFaults(gcapitest.Faults{Rate5xx: 0.2, RetryAfter: time.Millisecond})
			return h, groups
		}},
	}
	for _, wl := range workloads {
		h, groups := wl.setup(t)
		counter := &crasher{n: 1 << 30}
		runCrashing(t, h, groups, counter)
		total := counter.seen
		for n := 1; n <= total; n++ {
			h, groups := wl.setup(t)
			runCrashing(t, h, groups, &crasher{n: n})
			imgs, err := h.store.List()
			if err != nil {
				t.Fatal(err)
			}
			var fresh []string
			for _, img := range imgs {
				pair := img.Kind + ":" + string(img.State)
				if img.State == state.Retrying {
					pair += "<" + string(img.RetryFrom)
				}
				if img.State.Terminal() && !img.ActionDone {
					pair += "+action"
				}
				if !seen[pair] {
					seen[pair] = true
					fresh = append(fresh, pair)
				}
			}
			if len(fresh) == 0 {
				continue
			}
			name := fmt.Sprintf("%s-%03d.db", wl.name, n)
			b, err := os.ReadFile(h.statePath)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
			slices.Sort(fresh)
			manifest = append(manifest, name+" "+strings.Join(fresh, " "))
		}
	}
	// done_dir and failed_dir are files: every move fails, so images stay
	// done (or failed) with their action pending, and never settle.
	h, groups := v2Images(t)
	for _, d := range []string{h.watch.DoneDir, h.watch.FailedDir} {
		if err := os.WriteFile(d, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p := h.pipeline(h.config())
	stop := start(p)
	for _, g := range groups {
		if err := p.Submit(context.Background(), g); err != nil {
			t.Fatal(err)
		}
	}
	h.waitRecords(30*time.Second, "every image done or failed, with its action pending", func(imgs []state.Image) bool {
		n := 0
		for _, img := range imgs {
			if (img.State == state.Done && !img.ActionDone && img.Attempts > 0) || img.State == state.Failed {
				n++
			}
		}
		return n == len(groups)
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(h.statePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "action.db"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	manifest = append(manifest, "action.db single:done+action mhd:done+action zip:done+action")

	readme := "State files written by schema-2 gcingest (TestWriteStateV2Fixtures), one line per file:\n" +
		"the (kind:state) pairs it was kept for.\n\n" + strings.Join(manifest, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(out, "MANIFEST"), []byte(readme), 0o644); err != nil {
		t.Fatal(err)
	}
}

// v2Images is the image workload: one image of each kind, a two-part one,
// and an empty file (failed).
func v2Images(t *testing.T) (*harness, []Group) {
	h := newHarness(t, gcapitest.Options{Seed: 5}, "move")
	groups := []Group{h.group(KindSingle, "d0/img.mha", h.write("d0/img.mha", gcapitest.SampleMHA(0, 4, 4, 2)))}
	hdr, raw := gcapitest.SampleMHDPair(9, 4, 4, 2, "p.raw")
	groups = append(groups, h.group(KindMHD, "m/p.mhd", h.write("m/p.mhd", hdr), h.write("m/p.raw", raw)))
	var dcm []File
	for name, b := range gcapitest.SampleDICOMSeries(2) {
		dcm = append(dcm, h.write("z/"+name, b))
	}
	groups = append(groups, h.group(KindZip, "dicom:z", sortFiles(dcm)...))
	big := append(gcapitest.SampleMHA(4, 4, 4, 2), make([]byte, 6<<20)...)
	groups = append(groups, h.group(KindSingle, "big.mha", h.write("big.mha", big)))
	groups = append(groups, h.group(KindSingle, "empty.mha", h.write("empty.mha", nil)))
	return h, groups
}

// v2Duplicate is an image whose identical content the archive already
// holds under its title.
func v2Duplicate(t *testing.T) (*harness, []Group) {
	h := newHarness(t, gcapitest.Options{Seed: 7}, "keep")
	g := h.group(KindSingle, "dup.mha", h.write("dup.mha", gcapitest.SampleMHA(5, 4, 4, 2)))
	runCrashing(t, h, []Group{g}, nil)
	h.store.Close()
	if err := os.Remove(h.statePath); err != nil {
		t.Fatal(err)
	}
	h.open()
	return h, []Group{g}
}
