package ingest

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/state"
)

// TestCutImageFailsNamingBothSizes: an image that reaches the pipeline
// although its own header proves it cut (the grouper lets it go after
// IncompleteWait) fails with the file named, and nothing of it is sent.
func TestCutImageFailsNamingBothSizes(t *testing.T) {
	mha := gcapitest.SampleMHA(1, 16, 16, 4)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(gcapitest.SampleNIfTI(2, 16, 16, 4))
	zw.Close()
	nii := gz.Bytes()
	tests := []struct {
		name, rel string
		content   []byte
		want      []string
	}{
		{"mha cut", "cut.mha", mha[:len(mha)-100], []string{"cut.mha", "incomplete", fmt.Sprint(len(mha)), fmt.Sprint(len(mha) - 100)}},
		{"mha too long", "long.mha", append(bytes.Clone(mha), 0, 0), []string{"long.mha", "longer than its header says"}},
		{"nii.gz cut", "cut.nii.gz", nii[:len(nii)-3], []string{"cut.nii.gz", "incomplete", "gzip trailer"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, gcapitest.Options{}, "keep")
			f := h.write(tt.rel, tt.content)
			p := h.pipeline(h.config())
			if err := p.Submit(t.Context(), h.group(KindSingle, tt.rel, f)); err != nil {
				t.Fatal(err)
			}
			stop := start(p)
			imgs := h.waitSettled(1)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if imgs[0].State != state.Failed {
				t.Fatalf("image %s (%s); want failed", imgs[0].State, imgs[0].LastError)
			}
			for _, w := range tt.want {
				if !strings.Contains(imgs[0].LastError, w) {
					t.Errorf("reason %q lacks %q", imgs[0].LastError, w)
				}
			}
			if n := h.srv.Stats().PartBytes; n != 0 {
				t.Errorf("%d bytes uploaded for an image proven incomplete", n)
			}
		})
	}
}

// TestHashingShowsProgress: the hash step reports the bytes it has read,
// so that status shows a file of many GiB being read, not "pending 0 %".
func TestHashingShowsProgress(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	content := gcapitest.SampleMHA(3, 1024, 1024, 8)
	h.write("big.mha", content)
	var seen int64
	sum, _, err := hashSource(t.Context(), filepath.Join(h.watch.Path, "big.mha"), func(n int64) { seen += n })
	if err != nil || sum == "" {
		t.Fatalf("hashSource: %q, %v", sum, err)
	}
	if seen != int64(len(content)) {
		t.Errorf("read reported %d bytes; want the file's %d", seen, len(content))
	}
	img := &state.Image{Watch: h.watch.Path, Key: "big.mha", State: state.Pending}
	if err := h.store.Create(img); err != nil {
		t.Fatal(err)
	}
	p := h.pipeline(h.config())
	p.mu.Lock()
	p.active[img.ID] = &progress{} // a worker took it
	p.mu.Unlock()
	p.hashProgress(img.ID, 1<<20, 4<<20)
	p.hashProgress(img.ID, 1<<20, 4<<20)
	snap, err := p.Snapshot(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range snap {
		if s.Key == "big.mha" && (!s.Hashing || s.BytesSent != 2<<20 || s.BytesTotal != 4<<20) {
			t.Errorf("snapshot %+v; want hashing 2 MiB of 4 MiB", s)
		}
	}
}
