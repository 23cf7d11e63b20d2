package group

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/gcingest/gcingest/watch"
)

// fakeInfo is a regular file's stat result without a file on disk.
type fakeInfo struct {
	name string
	size int64
	mod  time.Time
}

func (f fakeInfo) Name() string       { return f.name }
func (f fakeInfo) Size() int64        { return f.size }
func (f fakeInfo) Mode() fs.FileMode  { return 0o644 }
func (f fakeInfo) ModTime() time.Time { return f.mod }
func (f fakeInfo) IsDir() bool        { return false }
func (f fakeInfo) Sys() any           { return nil }

// benchTree returns 100,000 paths in 1,000 folders under root, with infos.
// The files are lone images of a format without a completeness proof
// (.e2e), so that deciding readiness reads no header: they are not on disk.
func benchTree(root string) ([]string, []fs.FileInfo) {
	paths := make([]string, 0, 100_000)
	infos := make([]fs.FileInfo, 0, 100_000)
	for d := range 1000 {
		for f := range 100 {
			name := fmt.Sprintf("img%03d.e2e", f)
			paths = append(paths, filepath.Join(root, fmt.Sprintf("scanner%d/case%04d", d%10, d), name))
			infos = append(infos, fakeInfo{name: name, size: int64(1000 + f), mod: t0})
		}
	}
	return paths, infos
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkObserveFirstScan100k: a new grouper's first full scan of 100,000
// files in 1,000 folders (the start-up cost), and the heap it then holds.
//
//	go test -run '^$' -bench 'Observe|Rescan|Ready' -benchmem ./ingest/
func BenchmarkObserveFirstScan100k(b *testing.B) {
	root := "/drop"
	paths, infos := benchTree(root)
	var held uint64
	for b.Loop() {
		b.StopTimer()
		before := heapInUse()
		b.StartTimer()
		g := NewGrouper(watch.Spec{Path: root, Settle: time.Minute}, nil)
		g.BeginScan()
		for i, p := range paths {
			g.Observe(p, infos[i], t0)
		}
		g.EndScan(t0)
		b.StopTimer()
		held = heapInUse() - before
		runtime.KeepAlive(g)
		b.StartTimer()
	}
	b.ReportMetric(float64(held)/(1<<20), "heap-MB")
}

// BenchmarkRescan100k: a periodic full rescan of 100,000 unchanged files
// (the steady-state cost of every rescan interval).
func BenchmarkRescan100k(b *testing.B) {
	root := "/drop"
	paths, infos := benchTree(root)
	g := NewGrouper(watch.Spec{Path: root, Settle: time.Minute}, nil)
	g.BeginScan()
	for i, p := range paths {
		g.Observe(p, infos[i], t0)
	}
	g.EndScan(t0)
	now := t0
	for b.Loop() {
		now = now.Add(time.Second)
		g.BeginScan()
		for i, p := range paths {
			g.Observe(p, infos[i], now)
		}
		g.EndScan(now)
	}
}

// BenchmarkReady100k: deciding readiness over 100,000 settled files once
// (no header reads: lone .e2e files), e.g. after the first rescan.
func BenchmarkReady100k(b *testing.B) {
	root := "/drop"
	paths, infos := benchTree(root)
	g := NewGrouper(watch.Spec{Path: root, Settle: time.Minute}, nil)
	for _, now := range []time.Time{t0, t0.Add(time.Minute)} {
		g.BeginScan()
		for i, p := range paths {
			g.Observe(p, infos[i], now)
		}
		g.EndScan(now)
	}
	for b.Loop() {
		ev := g.evaluate(t0.Add(time.Hour), false)
		if len(ev.ready) != len(paths) {
			b.Fatalf("%d ready, want %d", len(ev.ready), len(paths))
		}
	}
}

// BenchmarkReadyProven1k: the first readiness decision over 1,000 settled
// .mha files on disk, each opened once for its completeness proof (the cost
// after start-up, or of `gcingest plan`, per thousand images).
func BenchmarkReadyProven1k(b *testing.B) {
	root := b.TempDir()
	data := mhaBytes(16, 16, 16)
	for i := range 1000 {
		p := filepath.Join(root, fmt.Sprintf("case%02d", i/100), fmt.Sprintf("img%03d.mha", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	var paths []string
	var infos []fs.FileInfo
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			fi, _ := d.Info()
			paths, infos = append(paths, p), append(infos, fi)
		}
		return err
	})
	for b.Loop() {
		g := NewGrouper(watch.Spec{Path: root, Settle: time.Minute}, nil)
		for _, now := range []time.Time{t0, t0.Add(time.Minute)} {
			for i, p := range paths {
				g.Observe(p, infos[i], now)
			}
		}
		if ev := g.evaluate(t0.Add(time.Hour), false); len(ev.ready) != len(paths) {
			b.Fatalf("%d ready, want %d", len(ev.ready), len(paths))
		}
	}
}
