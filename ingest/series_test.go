package ingest

import (
	"archive/zip"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/watch"
)

// seriesSlice is slice i of the test series of seriesHarness.
func seriesSlice(series string, i int) []byte {
	return ctSpec{study: series + ".0", series: series, instance: fmt.Sprintf("%s.%d", series, i)}.bytes()
}

// itemSlices returns how many files the image of the archive's only item
// was built from (the ZIP sent), and the item's pk.
func itemSlices(t *testing.T, h *harness) (int, string) {
	t.Helper()
	items := h.srv.Items(testArchive)
	if len(items) != 1 {
		t.Fatalf("archive has %d items; want 1", len(items))
	}
	v := items[0].Value(testIface)
	if v == nil || v.Image == nil {
		t.Fatal("item has no image")
	}
	pk := strings.TrimSuffix(*v.Image, "/")
	pk = pk[strings.LastIndexByte(pk, '/')+1:]
	content, err := h.srv.ImageContent(pk)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(content), int64(len(content)))
	if err != nil {
		t.Fatalf("image content is not the ZIP sent: %v", err)
	}
	return len(zr.File), items[0].PK
}

// landSeries writes slices from..to of series under s/, submits what the
// grouper returns and waits for every record to settle.
func landSeries(t *testing.T, h *harness, p *Pipeline, series string, from, to, records int) []state.Image {
	t.Helper()
	for i := from; i <= to; i++ {
		h.write(fmt.Sprintf("s/IM%d", i), seriesSlice(series, i))
	}
	submitPlanned(t, h, p)
	return h.waitSettled(records)
}

// TestLateSliceAfterMoveSendsWholeSeries: with after_upload = move, the
// first slices are in done_dir when two late ones arrive; the item's
// value must become the whole series, not the two late slices.
func TestLateSliceAfterMoveSendsWholeSeries(t *testing.T) {
	for _, deid := range []bool{false, true} {
		t.Run(map[bool]string{false: "as is", true: "deidentified"}[deid], func(t *testing.T) {
			h, _ := deidHarness(t, "")
			h.watch.AfterUpload = watch.AfterUploadMove
			h.watch.Deidentify = deid
			const series = "1.2.826.0.1.560.1.2"
			p := h.pipeline(h.config())
			stop := start(p)
			defer stop()
			imgs := landSeries(t, h, p, series, 1, 3, 1)
			if imgs[0].State != state.Finished {
				t.Fatalf("first: %s (%s)", imgs[0].State, imgs[0].LastError)
			}
			imgs = landSeries(t, h, p, series, 4, 5, 2)
			if imgs[1].State != state.Finished || imgs[1].ItemPK != imgs[0].ItemPK {
				t.Fatalf("late: %s (%s) on item %s; want finished on %s", imgs[1].State, imgs[1].LastError, imgs[1].ItemPK, imgs[0].ItemPK)
			}
			if n, _ := itemSlices(t, h); n != 5 {
				t.Errorf("the item's image holds %d files; want the whole series of 5", n)
			}
			// Every file of the series is in done_dir, together.
			for i := 1; i <= 5; i++ {
				if _, err := os.Stat(filepath.Join(h.watch.DoneDir, "s", fmt.Sprintf("IM%d", i))); err != nil {
					t.Errorf("IM%d not in done_dir: %v", i, err)
				}
			}
			// A third late slice gathers all five again.
			imgs = landSeries(t, h, p, series, 6, 6, 3)
			if imgs[2].State != state.Finished {
				t.Fatalf("third: %s (%s)", imgs[2].State, imgs[2].LastError)
			}
			if n, _ := itemSlices(t, h); n != 6 {
				t.Errorf("the item's image holds %d files; want 6", n)
			}
		})
	}
}

// TestLateSliceAfterDeleteKeepsTheItem: after_upload = delete leaves
// nothing to gather: the late slices fail, naming the series, the item and
// what to do, and the item keeps its whole series.
func TestLateSliceAfterDeleteKeepsTheItem(t *testing.T) {
	h, rec := deidHarness(t, "")
	h.watch.AfterUpload = watch.AfterUploadDelete
	const series = "1.2.826.0.1.561.1.2"
	p := h.pipeline(h.config())
	stop := start(p)
	defer stop()
	imgs := landSeries(t, h, p, series, 1, 3, 1)
	if imgs[0].State != state.Finished {
		t.Fatalf("first: %s (%s)", imgs[0].State, imgs[0].LastError)
	}
	rec.mu.Lock()
	puts := len(rec.puts)
	rec.mu.Unlock()
	imgs = landSeries(t, h, p, series, 4, 5, 2)
	late := imgs[1]
	if late.State != state.Failed {
		t.Fatalf("late: %s; want failed", late.State)
	}
	for _, want := range []string{imgs[0].ItemPK, "delete", "gcingest retry", "IM1"} {
		if !strings.Contains(late.LastError, want) {
			t.Errorf("reason %q lacks %q", late.LastError, want)
		}
	}
	if n, _ := itemSlices(t, h); n != 3 {
		t.Errorf("the item's image holds %d files; want its 3, untouched", n)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.puts) != puts {
		t.Errorf("%d part uploads sent for the late slices; want none", len(rec.puts)-puts)
	}
}

// TestSeriesAlreadyHeldIsNotSentAgain: after the state file is lost, a
// kept series is found whole in its item (the server's image names the
// series and its depth): a duplicate, nothing sent. Part of it alone
// would shrink the item: it fails instead.
func TestSeriesAlreadyHeldIsNotSentAgain(t *testing.T) {
	for _, deid := range []bool{false, true} {
		t.Run(map[bool]string{false: "as is", true: "deidentified"}[deid], func(t *testing.T) {
			h, rec := deidHarness(t, "")
			h.watch.Deidentify = deid
			const series = "1.2.826.0.1.562.1.2"
			// run runs a pipeline over a state file started anew (the
			// secret beside it kept) until what the drop folder holds
			// has settled.
			run := func(first bool) state.Image {
				t.Helper()
				if !first {
					if err := h.store.Close(); err != nil {
						t.Fatal(err)
					}
					if err := os.Remove(h.statePath); err != nil {
						t.Fatal(err)
					}
					h.open()
				}
				p := h.pipeline(h.config())
				stop := start(p)
				submitPlanned(t, h, p)
				imgs := h.waitSettled(1)
				if err := stop(); err != nil {
					t.Fatal(err)
				}
				return imgs[0]
			}
			for i := 1; i <= 4; i++ {
				h.write(fmt.Sprintf("s/IM%d", i), seriesSlice(series, i))
			}
			if img := run(true); img.State != state.Finished {
				t.Fatalf("first: %s (%s)", img.State, img.LastError)
			}
			rec.mu.Lock()
			puts := len(rec.puts)
			rec.mu.Unlock()

			// The state file is lost.
			if img := run(false); img.State != state.Duplicate {
				t.Fatalf("after the state file was lost: %s (%s); want duplicate", img.State, img.LastError)
			}
			rec.mu.Lock()
			if len(rec.puts) != puts {
				t.Errorf("%d part uploads sent for a series the item holds whole", len(rec.puts)-puts)
			}
			rec.mu.Unlock()

			// Only two of its files in the drop folder (the same folder:
			// the title is keyed by folder and series), and no record:
			// sending them would replace four slices with two.
			for _, i := range []int{3, 4} {
				if err := os.Remove(filepath.Join(h.watch.Path, "s", fmt.Sprintf("IM%d", i))); err != nil {
					t.Fatal(err)
				}
			}
			if img := run(false); img.State != state.Failed || !strings.Contains(img.LastError, "4 slices") {
				t.Fatalf("part of a held series: %s (%s); want failed, naming the 4 slices the item holds", img.State, img.LastError)
			}
			if n, _ := itemSlices(t, h); n != 4 {
				t.Errorf("the item's image holds %d files; want its 4, untouched", n)
			}
		})
	}
}
