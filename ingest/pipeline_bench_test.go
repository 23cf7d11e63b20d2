package ingest

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/watch"
)

// BenchmarkPipeline sends GCINGEST_BENCH_IMAGES (default 1000) images of
// 1 MiB each through the fake server with no import delay and reports
// images per second, from recording the backlog (SubmitAll, as the agent
// does with what is ready at once) to the last image finished.
// GCINGEST_BENCH_CONCURRENCY sets images in flight (default 4, the config
// default), GCINGEST_BENCH_AFTER the after-upload action (default move).
// Run with
//
//	go test -run '^$' -bench Pipeline -benchmem -benchtime 1x ./ingest/
func BenchmarkPipeline(b *testing.B) {
	n := 1000
	if s := os.Getenv("GCINGEST_BENCH_IMAGES"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	conc := 4
	if s := os.Getenv("GCINGEST_BENCH_CONCURRENCY"); s != "" {
		conc, _ = strconv.Atoi(s)
	}
	const size = 1 << 20
	var total time.Duration
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		// The fake keeps uploaded bytes in memory-backed storage when it
		// can: a real server's disk is not ours, and its writes would
		// slow the state file's fsyncs on a shared disk.
		fakeDir := filepath.Join(dir, "fake")
		if d, err := os.MkdirTemp("/dev/shm", "gcingest-bench-"); err == nil {
			fakeDir = d
			defer os.RemoveAll(d)
		}
		srv, api, store := benchSetup(b, gcapitest.Options{StoreDir: fakeDir}, filepath.Join(dir, "state.db"))
		w := Watch{Spec: watch.Spec{Path: filepath.Join(dir, "drop"), Archive: testArchive, Interface: testIface,
			AfterUpload: watch.AfterUpload(cmp.Or(os.Getenv("GCINGEST_BENCH_AFTER"), "move")), DoneDir: filepath.Join(dir, "done")}}
		// A whole image, as the hash step's completeness proof and the
		// fake's import want: 1 MiB of voxels behind the header.
		sample := gcapitest.SampleMHA(1, 1024, size/1024, 1)
		var groups []Group
		for i := range n {
			rel := fmt.Sprintf("d%03d/img%04d.mha", i%100, i)
			p := filepath.Join(w.Path, rel)
			os.MkdirAll(filepath.Dir(p), 0o755)
			content := slices.Clone(sample)
			copy(content[len(content)-size:], fmt.Sprintf("%d", i))
			if err := os.WriteFile(p, content, 0o644); err != nil {
				b.Fatal(err)
			}
			fi, _ := os.Stat(p)
			groups = append(groups, Group{Watch: w.Path, Key: rel, Kind: KindSingle,
				Files: []File{{Path: p, Rel: rel, Size: fi.Size(), ModTime: fi.ModTime()}}})
		}
		syncDisk() // the dropped files were on disk before the agent saw them
		p := NewPipeline(PipelineConfig{Watches: []Watch{w}, SpoolDir: filepath.Join(dir, "spool"), Concurrency: conc,
			PollInterval: 2 * time.Millisecond, PollMax: 20 * time.Millisecond}, store, api, nil)
		ctx, cancel := context.WithCancel(context.Background())
		b.StartTimer()
		t0 := time.Now()
		errc := make(chan error, 1)
		go func() { errc <- p.Run(ctx) }()
		// The agent records what becomes ready together in one commit
		// (runWatch); a backlog of n images is that.
		for _, err := range p.SubmitAll(ctx, groups) {
			if err != nil {
				b.Fatal(err)
			}
		}
		for {
			c, err := store.Counts()
			if err != nil {
				b.Fatal(err)
			}
			if c[state.Finished]+c[state.Failed] >= n {
				if c[state.Failed] > 0 {
					failed, _ := store.List(state.Failed)
					b.Fatalf("%d images failed, the first with: %s", c[state.Failed], failed[0].LastError)
				}
				break
			}
			time.Sleep(2 * time.Millisecond) // polling a condition
		}
		total += time.Since(t0)
		b.StopTimer()
		cancel()
		<-errc
		store.Close()
		srv.Close()
	}
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "images/s")
}

// benchSetup starts a fake server holding the test archive and interface
// (opts, with a byte quota no benchmark reaches) and opens a state file at
// statePath: what each pipeline benchmark runs against. The caller closes
// both.
func benchSetup(b *testing.B, opts gcapitest.Options, statePath string) (*gcapitest.Server, *gcapi.Client, *state.Store) {
	b.Helper()
	opts.QuotaBytes = 1 << 40
	srv := gcapitest.NewServer(opts)
	srv.AddArchive(testArchive, "Scans")
	srv.AddInterface(testIface, "Image")
	api, err := gcapi.New(srv.URL, srv.Token(), gcapi.WithHTTPClient(srv.Client()))
	if err != nil {
		b.Fatal(err)
	}
	store, err := state.Open(statePath, state.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return srv, api, store
}
