//go:build linux

package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gcingest/gcingest/state"
)

// benchImages is the size of the state file issue 22 asks status to
// answer for in under 0.3 s and 50 MB.
const benchImages = 100_000

// BenchmarkStatus100k measures `gcingest status` (the default report, no
// agent running: the state file opened read-only) on a real state file of
// 100,000 images, 120 of them still to show (failed and pending), the rest
// finished, each record as a three-file DICOM series leaves it.
//
//	go test -run '^$' -bench BenchmarkStatus100k -benchmem .
//
// in-process is the command as main runs it (time, and allocations with
// -benchmem); process runs the built binary and reports its peak resident
// memory (peak-RSS-MB, the kernel's maxrss: heap and the pages of the
// state file it read); cold does the same after dropping the state file
// from the page cache, as after a reboot.
func BenchmarkStatus100k(b *testing.B) {
	dir := b.TempDir()
	cfg := writeBenchState(b, dir, benchImages)
	args := []string{"status", "--config", cfg}

	b.Run("in-process", func(b *testing.B) {
		c := &cli{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }}
		for b.Loop() {
			if err := c.dispatch(b.Context(), args); err != nil {
				b.Fatal(err)
			}
		}
	})
	bin := filepath.Join(dir, "gcingest")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	statePath := filepath.Join(dir, "state.db")
	for _, cold := range []bool{false, true} {
		name := "process"
		if cold {
			name = "cold"
		}
		b.Run(name, func(b *testing.B) {
			var peak int64
			for b.Loop() {
				if cold {
					b.StopTimer()
					dropFromPageCache(b, statePath)
					b.StartTimer()
				}
				cmd := exec.Command(bin, args...)
				cmd.Env = append(os.Environ(), "GCINGEST_CONFIG=")
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("gcingest status: %v\n%s", err, out)
				}
				peak = max(peak, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss) // KiB on Linux
			}
			b.ReportMetric(float64(peak)/1024, "peak-RSS-MB")
		})
	}
}

// writeBenchState writes a config and a state file of n images in dir and
// returns the config's path.
func writeBenchState(b *testing.B, dir string, n int) string {
	b.Helper()
	drop := filepath.Join(dir, "drop")
	if err := os.Mkdir(drop, 0o755); err != nil {
		b.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.toml")
	statePath := filepath.Join(dir, "state.db")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "[grand_challenge]\nurl = \"https://grand-challenge.org\"\n[state]\npath = %q\n"+
		"[status]\nlisten = \"\"\n[[watch]]\npath = %q\narchive = \"my-archive\"\ninterface = \"ct-image\"\n", statePath, drop), 0o600); err != nil {
		b.Fatal(err)
	}
	st, err := state.Open(statePath, state.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	const batch = 1000
	for start := 0; start < n; start += batch {
		imgs := make([]*state.Image, 0, batch)
		for i := start; i < min(start+batch, n); i++ {
			imgs = append(imgs, benchRecord(drop, i))
		}
		if _, err := st.CreateEach(imgs, nil); err != nil {
			b.Fatal(err)
		}
	}
	return cfg
}

// benchRecord is image i as a finished (or, one in a thousand, failed;
// one in five thousand, pending) three-file DICOM series.
func benchRecord(drop string, i int) *state.Image {
	key := fmt.Sprintf("scanner1/patient%06d/series%d", i, i%7)
	img := &state.Image{Watch: drop, Key: key, Kind: "zip", Title: key + " [0123456789ab]", Archive: "my-archive",
		State: state.Finished, ActionDone: true, MovedTo: filepath.Join(drop, "..", "done", key),
		ItemPK: "1b2c3d4e-1b2c-4d5e-8f90-123456789abc", ImagePK: "2b2c3d4e-1b2c-4d5e-8f90-123456789abc",
		Finished: time.Unix(1_700_000_000, 0).UTC()}
	var rels []string
	for j := range 3 {
		rel := fmt.Sprintf("%s/IM%04d.dcm", key, j)
		img.Files = append(img.Files, state.File{Rel: rel, Path: filepath.Join(drop, rel), Size: 512 << 10,
			ModTime: time.Unix(1_700_000_000, 0).UTC(), SHA256: strings.Repeat("ab", 32), Ident: "2049:123456:1700000000"})
		rels = append(rels, rel)
	}
	img.Uploads = []state.Upload{{Filename: "series.zip", Path: "/var/spool/gcingest/x.zip", Size: 3 << 20, PartSize: 32 << 20,
		PK: "0c5e2f4a-1b2c-4d5e-8f90-123456789abc", Completed: true, ZipOf: rels}}
	img.Values = []state.Value{{Interface: "ct-image", Kind: state.ValueImage, Files: rels, Uploads: []int{0}, Confirmed: true}}
	switch {
	case i%5000 == 7:
		img.State, img.ActionDone, img.Values[0].Confirmed, img.ItemPK, img.ImagePK = state.Pending, false, false, "", ""
	case i%1000 == 5:
		img.State, img.Values[0].Confirmed, img.ImagePK = state.Failed, false, ""
		img.LastError = "import of ct-image failed: Could not read header of IM0000.dcm"
	}
	return img
}

// dropFromPageCache asks the kernel to forget the cached pages of path, so
// that the next reader reads it from the disk.
func dropFromPageCache(b *testing.B, path string) {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		b.Fatal(err)
	}
}
