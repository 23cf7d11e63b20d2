package gcapi_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

// benchSize reads GCINGEST_BENCH_SIZE ("1GiB" by default; a byte count or
// a number with KiB, MiB or GiB).
func benchSize(b *testing.B) int64 {
	s := os.Getenv("GCINGEST_BENCH_SIZE")
	if s == "" {
		return 1 << 30
	}
	mult := int64(1)
	for suf, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if v, ok := strings.CutSuffix(s, suf); ok {
			s, mult = v, m
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 {
		b.Fatalf("GCINGEST_BENCH_SIZE=%q: want a size like 1GiB or 268435456", os.Getenv("GCINGEST_BENCH_SIZE"))
	}
	return n * mult
}

// writeRandomFile writes size pseudo-random bytes to a temp file without
// holding them in memory.
func writeRandomFile(b *testing.B, size int64) *os.File {
	b.Helper()
	f, err := os.Create(filepath.Join(b.TempDir(), "bench.bin"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	w := bufio.NewWriterSize(f, 1<<20)
	x := uint64(0x9E3779B97F4A7C15)
	var word [8]byte
	for left := size; left > 0; left -= 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		for i := range word {
			word[i] = byte(x >> (8 * i))
		}
		if _, err := w.Write(word[:min(8, left)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	return f
}

// heapPeak samples HeapInuse until stopped and returns the peak.
func heapPeak() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		return peak.Load()
	}
}

// benchStoreParent is where the fake keeps uploaded bytes: GCINGEST_BENCH_STORE,
// else /dev/shm when there is one (the fake's disk writes are not what is
// measured, and make the figures noisy), else the temp dir.
func benchStoreParent() string {
	if d := os.Getenv("GCINGEST_BENCH_STORE"); d != "" {
		return d
	}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}

// plainUpload is the baseline: the same multipart protocol done as simply
// as possible, parts streamed straight from the file with no buffers, no
// limiter, no progress, no retries.
func plainUpload(ctx context.Context, c *gcapi.Client, hc *http.Client, f *os.File, size, partSize int64, conc int) error {
	u, err := c.CreateUpload(ctx, "plain.bin")
	if err != nil {
		return err
	}
	n := int((size + partSize - 1) / partSize)
	urls := map[int]string{}
	for lo := 1; lo <= n; lo += 100 {
		var nums []int
		for p := lo; p < lo+100 && p <= n; p++ {
			nums = append(nums, p)
		}
		got, err := c.PresignedURLs(ctx, u, nums)
		if err != nil {
			return err
		}
		for k, v := range got {
			urls[k] = v
		}
	}
	parts := make([]gcapi.Part, n)
	jobs := make(chan int)
	errs := make(chan error, conc)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range jobs {
				off := int64(p-1) * partSize
				l := min(partSize, size-off)
				req, err := http.NewRequestWithContext(ctx, http.MethodPut, urls[p], io.NewSectionReader(f, off, l))
				if err != nil {
					errs <- err
					return
				}
				req.ContentLength = l
				resp, err := hc.Do(req)
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("part %d: %s", p, resp.Status)
					return
				}
				parts[p-1] = gcapi.Part{ETag: resp.Header.Get("ETag"), PartNumber: p}
			}
		}()
	}
	for p := 1; p <= n; p++ {
		jobs <- p
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].PartNumber < parts[j].PartNumber })
	_, err = c.CompleteUpload(ctx, u, parts)
	return err
}

// BenchmarkUploadFile uploads one file (1 GiB unless GCINGEST_BENCH_SIZE
// says otherwise) to the fake over loopback with UploadFile, and the same
// bytes with a plain parallel PUT to the same fake, in one run. It reports
// the throughput of each, their ratio (UploadFile / plain; target ≥ 0.7)
// and the peak heap during each (the fake's own receiving buffers are in
// both; target for UploadFile < 4 × part size + 32 MiB).
//
//	go test -run '^$' -bench UploadFile -benchtime 1x ./gcapi/
func BenchmarkUploadFile(b *testing.B) {
	size := benchSize(b)
	f := writeRandomFile(b, size)
	const partSize, conc = gcapi.DefaultPartSize, gcapi.DefaultPartConcurrency
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	ctx := context.Background()

	// phase runs one upload against a fresh fake whose store is removed
	// afterwards, so phases do not pile up gigabytes or inherit each
	// other's disk write-back.
	phase := func(dur *time.Duration, peak *uint64, send func(*gcapi.Client) error) {
		store, err := os.MkdirTemp(benchStoreParent(), "gcapi-bench-")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(store)
		srv := gcapitest.NewServer(gcapitest.Options{QuotaBytes: 1 << 50, StoreDir: store})
		defer srv.Close()
		c, err := gcapi.New(srv.URL, srv.Token())
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		stop := heapPeak()
		start := time.Now()
		err = send(c)
		*dur += time.Since(start)
		*peak = max(*peak, stop())
		if err != nil {
			b.Fatal(err)
		}
	}
	var plainDur, upDur time.Duration
	var plainPeak, upPeak uint64
	plain := func() {
		phase(&plainDur, &plainPeak, func(c *gcapi.Client) error {
			return plainUpload(ctx, c, hc, f, size, partSize, conc)
		})
	}
	upload := func() {
		phase(&upDur, &upPeak, func(c *gcapi.Client) error {
			u, err := c.UploadFile(ctx, gcapi.FileUpload{Filename: "bench.bin", Body: f, Size: size,
				PartSize: partSize, PartConcurrency: conc})
			if err == nil && u.Status != gcapi.UploadCompleted {
				err = fmt.Errorf("status %s", u.Status)
			}
			return err
		})
	}
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		// ABBA order, so that whatever drifts during the run (disk
		// write-back of the fake's store, page cache) weighs on both.
		plain()
		upload()
		upload()
		plain()
	}
	b.StopTimer()
	mb := 2 * float64(size) * float64(b.N) / 1e6
	plainRate, upRate := mb/plainDur.Seconds(), mb/upDur.Seconds()
	b.ReportMetric(upRate, "upload-MB/s")
	b.ReportMetric(plainRate, "plain-MB/s")
	b.ReportMetric(upRate/plainRate, "ratio")
	b.ReportMetric(float64(upPeak)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(plainPeak)/(1<<20), "plain-peak-heap-MiB")
}
