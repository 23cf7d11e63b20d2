package ingest

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/watch"
)

// BenchmarkBacklog drops GCINGEST_BENCH_IMAGES (default 20,000) images of
// 8 KiB at start, against the fake server with 50 ms imports and the
// server's listing cost (pages of at most 1,000 items, values serialised),
// and reports the agent's requests per image and its CPU time per 1,000
// images landed over the first and the last quarter of the backlog: a
// backlog must land at a constant rate however full the archive gets.
// The fake runs in this process, so the CPU is the agent's and the fake's
// together; the fake's cost per request does not grow with the archive.
// Run with
//
//	go test -run '^$' -bench Backlog -benchmem -benchtime 1x ./ingest/
func BenchmarkBacklog(b *testing.B) {
	n := 20000
	if s := os.Getenv("GCINGEST_BENCH_IMAGES"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		srv, api, store := benchSetup(b, gcapitest.Options{StoreDir: filepath.Join(dir, "fake"),
			ImportDelay: 50 * time.Millisecond, MaxUploads: 1 << 30}, filepath.Join(dir, "state.db"))
		w := Watch{Spec: watch.Spec{Path: filepath.Join(dir, "drop"), Archive: testArchive, Interface: testIface,
			AfterUpload: watch.AfterUpload(cmp.Or(os.Getenv("GCINGEST_BENCH_AFTER"), "keep"))}}
		sample := gcapitest.SampleMHA(1, 64, 128, 1) // 8 KiB of voxels
		var groups []Group
		for i := range n {
			rel := fmt.Sprintf("d%03d/img%05d.mha", i%100, i)
			p := filepath.Join(w.Path, rel)
			os.MkdirAll(filepath.Dir(p), 0o755)
			content := slices.Clone(sample)
			copy(content[len(content)-16:], fmt.Sprintf("%016d", i))
			if err := os.WriteFile(p, content, 0o644); err != nil {
				b.Fatal(err)
			}
			fi, _ := os.Stat(p)
			groups = append(groups, Group{Watch: w.Path, Key: rel, Kind: KindSingle,
				Files: []File{{Path: p, Rel: rel, Size: fi.Size(), ModTime: fi.ModTime()}}})
		}
		syncDisk()
		// Landed images are counted as the pipeline reports them, not by
		// reading the state file, whose every read would cost the more
		// the more records it holds.
		var landed atomic.Int64
		progress := func(ev ProgressEvent) {
			if ev.Imported {
				landed.Add(1)
			}
		}
		p := NewPipeline(PipelineConfig{Watches: []Watch{w}, SpoolDir: filepath.Join(dir, "spool"), Progress: progress}, store, api, nil)
		ctx, cancel := context.WithCancel(context.Background())
		b.StartTimer()
		t0 := time.Now()
		errc := make(chan error, 1)
		go func() { errc <- p.Run(ctx) }()
		for _, err := range p.SubmitAll(ctx, groups) {
			if err != nil {
				b.Fatal(err)
			}
		}
		quarter := n / 4
		var cpuAt []time.Duration // CPU used when 0, n/4, 3n/4 and n had landed
		var reqAt []int
		mark := func() {
			cpuAt = append(cpuAt, cpuTime())
			reqAt = append(reqAt, len(srv.Requests()))
		}
		mark()
		deadline := time.Now().Add(time.Hour)
		for next := 1; next < 4; {
			for next < 4 && landed.Load() >= int64([]int{0, quarter, n - quarter, n}[next]) {
				mark()
				next++
			}
			if time.Now().After(deadline) {
				c, _ := store.Counts()
				b.Fatalf("%d of %d landed in an hour: %v", landed.Load(), n, c)
			}
			time.Sleep(20 * time.Millisecond) // polling a condition
		}
		elapsed := time.Since(t0)
		if c, err := store.Counts(); err != nil || c[state.Finished] != n {
			failed, _ := store.List(state.Failed)
			b.Fatalf("counts %v (%v); want %d finished; failed: %v", c, err, n, describe(failed))
		}
		b.StopTimer()
		cancel()
		<-errc
		reqs := srv.Requests()
		store.Close()
		srv.Close()
		per1000 := func(i int, count int) float64 {
			return (cpuAt[i+1] - cpuAt[i]).Seconds() * 1000 / float64(count)
		}
		first, last := per1000(0, quarter), per1000(2, quarter)
		b.ReportMetric(float64(n)/elapsed.Seconds(), "images/s")
		b.ReportMetric(float64(len(reqs))/float64(n), "req/image")
		b.ReportMetric(first, "cpu-s/1000-first")
		b.ReportMetric(last, "cpu-s/1000-last")
		b.ReportMetric(last/first, "cpu-last/first")
		b.Logf("requests by kind: %s", requestKinds(reqs))
	}
}

// idSegment is a path segment that names an object (a pk, an S3 upload id).
var idSegment = regexp.MustCompile(`^(?:[0-9]+|[A-Za-z0-9._-]*[0-9][A-Za-z0-9._-]*)$`)

// requestKinds counts requests by method and path, ids replaced.
func requestKinds(reqs []gcapitest.Request) string {
	counts := map[string]int{}
	for _, r := range reqs {
		segs := strings.Split(r.Path, "/")
		for i, s := range segs {
			if len(s) >= 8 && idSegment.MatchString(s) {
				segs[i] = "{id}"
			}
		}
		if len(segs) > 2 && (segs[1] == "s3" || segs[1] == "media") {
			segs = segs[:2]
		}
		counts[r.Method+" "+strings.Join(segs, "/")]++
	}
	var keys []string
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return counts[keys[i]] > counts[keys[j]] })
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %7d %s", counts[k], k)
	}
	return b.String()
}
