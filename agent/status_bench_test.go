package agent

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/gcingest/gcingest/ingest"
	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/status"
)

// BenchmarkStatusDuringBacklog is /status?state=failed, what a monitor
// polls, while 20,000 images wait unfinished (none failed): the report is
// counts and the images asked for, and reads no other record. It decoded
// every unfinished record (Pipeline.Snapshot) until the progress of the
// images in flight came from the pipeline alone (Pipeline.Active). Run with
//
//	go test -run '^$' -bench StatusDuringBacklog -benchmem ./agent/
func BenchmarkStatusDuringBacklog(b *testing.B) {
	st, err := state.Open(filepath.Join(b.TempDir(), "state.db"), state.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	const n = 20000
	imgs := make([]*state.Image, n)
	now := time.Now().UTC()
	for i := range imgs {
		rel := fmt.Sprintf("d%03d/img%05d.mha", i%100, i)
		imgs[i] = &state.Image{Watch: "/data/drop", Key: rel, Kind: "single", State: state.Pending, Created: now, Updated: now,
			Files: []state.File{{Path: "/data/drop/" + rel, Rel: rel, Size: 1 << 20, ModTime: now}}}
	}
	if _, err := st.CreateEach(imgs, nil); err != nil {
		b.Fatal(err)
	}
	src := &pipelineSource{st: st, p: ingest.NewPipeline(ingest.PipelineConfig{}, st, nil, nil), version: "bench"}
	q := status.Query{States: []string{status.StateFailed}}
	for b.Loop() {
		rep, err := src.Report(b.Context(), q)
		if err != nil {
			b.Fatal(err)
		}
		if rep.Counts[status.StatePending] != n || len(rep.Images) != 0 {
			b.Fatalf("counts %v, %d images; want %d pending and none listed", rep.Counts, len(rep.Images), n)
		}
	}
}
