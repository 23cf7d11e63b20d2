package dimse

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime/metrics"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestThroughputVsStorescp measures what issue 21 asks of the receiver:
// storescu sending a 500-instance series of 256 KiB instances to this
// server, against the same to dcmtk's own storescp on the same machine, and
// the memory the Go runtime holds meanwhile. It takes a while and writes
// 250 MB, so it runs only when DIMSE_BENCH=1 (bench.sh sets it).
// DIMSE_BENCH_INSTANCES and DIMSE_BENCH_SIZE change the series;
// DIMSE_BENCH_SENDERS=k splits it among k storescu processes sending at
// once (storescp then runs with --fork to take them at once too).
func TestThroughputVsStorescp(t *testing.T) {
	if os.Getenv("DIMSE_BENCH") != "1" {
		t.Skip("set DIMSE_BENCH=1 to compare throughput with storescp (dimse/bench.sh)")
	}
	needDCMTK(t)
	if _, err := exec.LookPath("storescp"); err != nil {
		t.Fatalf("dcmtk's storescp: %v", err)
	}
	n, size := 500, 256<<10
	if v, err := strconv.Atoi(os.Getenv("DIMSE_BENCH_INSTANCES")); err == nil {
		n = v
	}
	if v, err := strconv.Atoi(os.Getenv("DIMSE_BENCH_SIZE")); err == nil {
		size = v
	}
	senders := 1
	if v, err := strconv.Atoi(os.Getenv("DIMSE_BENCH_SENDERS")); err == nil && v > 0 {
		senders = v
	}
	testJournalSize = 0 // the journal as the agent has it
	defer func() { testJournalSize = 4 << 20 }()
	insts := series("900", n, size)
	var dirs []string
	for i := range senders {
		dir, _ := writeFiles(t, insts[i*n/senders:(i+1)*n/senders])
		dirs = append(dirs, dir)
	}
	mb := float64(n*size) / (1 << 20)

	storescp := func(t *testing.T, extra ...string) time.Duration {
		out := t.TempDir()
		port := freePort(t)
		args := append([]string{"-aet", "GCINGEST", "-od", out}, extra...)
		if senders > 1 {
			args = append(args, "--fork")
		}
		cmd := exec.Command("storescp", append(args, port)...)
		cmd.Env = nodelay
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		waitFor(t, "storescp to listen", 10*time.Second, func() bool {
			c, err := net.Dial("tcp", "127.0.0.1:"+port)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		return sendAll(t, "127.0.0.1", port, dirs)
	}
	ours := func(t *testing.T) (time.Duration, uint64) {
		ts := startServer(t, func(c *Config) { c.Logger = nil })
		var peak uint64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}}
			for {
				metrics.Read(s)
				peak = max(peak, s[0].Value.Uint64())
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
		}()
		d := sendAll(t, ts.host, ts.port, dirs)
		close(stop)
		wg.Wait()
		ts.stop()
		if got := ts.Stats().Instances; got != int64(n) {
			t.Fatalf("stored %d instances, want %d", got, n)
		}
		return d, peak
	}

	var best struct{ scp, scpB, ours time.Duration }
	var peak uint64
	pick := func(b *time.Duration, d time.Duration) {
		if *b == 0 || d < *b {
			*b = d
		}
	}
	// Alternate, twice each, and keep the best of each: the machine's
	// noise then hurts neither side more.
	for range 2 {
		pick(&best.scp, storescp(t))
		pick(&best.scpB, storescp(t, "+B"))
		d, p := ours(t)
		pick(&best.ours, d)
		peak = max(peak, p)
	}
	rate := func(d time.Duration) string { return fmt.Sprintf("%.1f MiB/s", mb/d.Seconds()) }
	t.Logf("%d instances of %d KiB (%.0f MiB) from %d storescu at once", n, size>>10, mb, senders)
	t.Logf("storescp (default):          %8s  %s", best.scp.Round(time.Millisecond), rate(best.scp))
	t.Logf("storescp +B (bit-preserving): %8s  %s", best.scpB.Round(time.Millisecond), rate(best.scpB))
	t.Logf("gcingest dimse (journal):     %8s  %s", best.ours.Round(time.Millisecond), rate(best.ours))
	t.Logf("ratio to storescp: %.2f; peak Go runtime memory while receiving: %.1f MiB (includes the test's own)",
		best.scp.Seconds()/best.ours.Seconds(), float64(peak)/(1<<20))
	if r := best.scp.Seconds() / best.ours.Seconds(); r < 0.8 {
		t.Errorf("throughput %.2f × storescp's, want at least 0.8", r)
	}
	if peak > 64<<20 {
		t.Errorf("peak memory %.1f MiB, want under 64 MiB", float64(peak)/(1<<20))
	}
}

// sendAll sends the files of each folder with a storescu of its own, all
// at once, and returns how long it took them all.
func sendAll(t *testing.T, host, port string, dirs []string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	errs := make(chan error, len(dirs))
	start := time.Now()
	for _, dir := range dirs {
		// storescu reads its file list from a folder (+sd) rather than
		// from an argument list that may be too long for the system.
		cmd := exec.CommandContext(ctx, "storescu", "-aet", "SCANNER", "-aec", "GCINGEST", "+sd", host, port, dir)
		cmd.Env = nodelay
		go func() {
			out, err := cmd.CombinedOutput()
			if err != nil {
				err = fmt.Errorf("storescu: %w\n%s", err, out)
			}
			errs <- err
		}()
	}
	for range dirs {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	d := time.Since(start)
	if t.Failed() {
		t.FailNow()
	}
	return d
}

// nodelay is the environment for dcmtk's tools in the benchmark:
// TCP_NODELAY=1 makes dcmtk turn off Nagle's algorithm, as Go does for its
// sockets by default. Without it storescp waits on delayed ACKs and runs
// about five times slower, which would flatter this server.
var nodelay = append(os.Environ(), "TCP_NODELAY=1")

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}
