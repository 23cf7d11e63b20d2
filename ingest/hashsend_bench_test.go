package ingest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/watch"
)

// BenchmarkBigFileFirstPart measures how soon the first part of a big file
// (GCINGEST_BENCH_BIG_MIB, default 1024) is accepted by the fake server
// after the image is submitted, beside how long hashing the file takes:
// the hash runs while the parts go (hashWhileSent), so the first part no
// longer waits for it (issue 22). Run with
//
//	go test -run '^$' -bench BigFileFirstPart -benchmem -benchtime 3x ./ingest/
func BenchmarkBigFileFirstPart(b *testing.B) {
	mib := 1024
	if s := os.Getenv("GCINGEST_BENCH_BIG_MIB"); s != "" {
		mib, _ = strconv.Atoi(s)
	}
	dir := b.TempDir()
	w := Watch{Spec: watch.Spec{Path: filepath.Join(dir, "drop"), Archive: testArchive, Interface: testIface, AfterUpload: "keep"}}
	p := filepath.Join(w.Path, "big.mha")
	os.MkdirAll(w.Path, 0o755)
	if err := os.WriteFile(p, gcapitest.SampleMHA(1, 1024, 1024, mib), 0o644); err != nil {
		b.Fatal(err)
	}
	fi, _ := os.Stat(p)
	g := Group{Watch: w.Path, Key: "big.mha", Kind: KindSingle, Files: []File{{Path: p, Rel: "big.mha", Size: fi.Size(), ModTime: fi.ModTime()}}}

	var firstPart, hashed time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		f, _ := os.Open(p)
		t0 := time.Now()
		if _, err := hashOpen(context.Background(), f); err != nil {
			b.Fatal(err)
		}
		hashed += time.Since(t0)
		f.Close()

		srv, c, store := benchSetup(b, gcapitest.Options{StoreDir: filepath.Join(dir, "fake"+strconv.Itoa(i))}, filepath.Join(dir, "state"+strconv.Itoa(i)+".db"))
		api := partSeen{API: c, once: &sync.Once{}, seen: make(chan struct{})}
		pl := NewPipeline(PipelineConfig{Watches: []Watch{w}, SpoolDir: filepath.Join(dir, "spool"), Concurrency: 1}, store, api, nil)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		b.StartTimer()
		t0 = time.Now()
		if err := pl.Submit(ctx, g); err != nil {
			b.Fatal(err)
		}
		go func() { errc <- pl.Run(ctx) }()
		select {
		case <-api.seen:
		case <-time.After(5 * time.Minute):
			b.Fatal("no part accepted in 5 minutes")
		}
		firstPart += time.Since(t0)
		b.StopTimer()
		cancel()
		<-errc
		store.Close()
		srv.Close()
	}
	b.ReportMetric(float64(firstPart.Milliseconds())/float64(b.N), "ms-to-first-part")
	b.ReportMetric(float64(hashed.Milliseconds())/float64(b.N), "ms-to-hash")
}
