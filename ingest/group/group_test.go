package group

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	studyA  = "1.2.826.0.1.1"
	seriesA = "1.2.826.0.1.1.1"
	seriesB = "1.2.826.0.1.1.2"
)

func dcmA(i int) []byte {
	return makeDICOM(studyA, seriesA, testCTClass, seriesA+"."+string(rune('0'+i)), 256)
}

// TestGroupAuto covers each grouping decision of group = auto with files on
// disk that have settled: what becomes one image, what waits and why.
func TestGroupAuto(t *testing.T) {
	seriesKey := "dicom:s/" + studyA + "/" + seriesA + "/" + testCTClass
	longDir := strings.Repeat("a-very-long-folder-name-", 8) + "/" + strings.Repeat("deeper-still-", 10)
	tests := []struct {
		name        string
		files       map[string][]byte
		exclude     []string
		wantReady   []string          // "key kind rel,rel"
		wantWaiting map[string]string // key → substring of the reason
	}{
		{
			name: "lone images by extension, any case",
			files: map[string][]byte{
				"a.mha": []byte("x"), "b.nii.gz": []byte("x"), "c.TIF": []byte("x"), "d/e.svs": []byte("x"),
				"f.png": []byte("x"), "g.JPEG": []byte("x"), "h.e2e": []byte("x"), "i.nrrd": []byte("x"),
			},
			wantReady: []string{
				"a.mha single a.mha", "b.nii.gz single b.nii.gz", "c.TIF single c.TIF", "d/e.svs single d/e.svs",
				"f.png single f.png", "g.JPEG single g.JPEG", "h.e2e single h.e2e", "i.nrrd single i.nrrd",
			},
		},
		{
			name: "names with spaces, unicode, hash and a long path",
			files: map[string][]byte{
				"scan 1/ct #2.mha":          []byte("x"),
				"ünïcødé/脳.nii":             []byte("x"),
				longDir + "/img.mha":        []byte("x"),
				"series #1/IM 0001":         dcmA(1),
				"series #1/IM 0002":         dcmA(2),
				"with space/ct a.mhd":       mhdText("2 2 1", "MET_UCHAR", "ct a.raw", ""),
				"with space/ct a.raw":       make([]byte, 4),
				"with space/other name.tif": []byte("x"),
			},
			wantReady: []string{
				longDir + "/img.mha single " + longDir + "/img.mha",
				"dicom:series #1/" + studyA + "/" + seriesA + "/" + testCTClass + " zip series #1/IM 0001,series #1/IM 0002",
				"scan 1/ct #2.mha single scan 1/ct #2.mha",
				"with space/ct a.mhd mhd with space/ct a.mhd,with space/ct a.raw",
				"with space/other name.tif single with space/other name.tif",
				"ünïcødé/脳.nii single ünïcødé/脳.nii",
			},
		},
		{
			name:      "mhd with its data file of the implied size",
			files:     map[string][]byte{"ct.mhd": mhdText("4 3 2", "MET_SHORT", "ct.raw", ""), "ct.raw": make([]byte, 4*3*2*2)},
			wantReady: []string{"ct.mhd mhd ct.mhd,ct.raw"},
		},
		{
			name:      "mhd with channels and header size",
			files:     map[string][]byte{"ct.mhd": mhdText("2 2 1", "MET_FLOAT", "ct.raw", "ElementNumberOfChannels = 3\nHeaderSize = 10\n"), "ct.raw": make([]byte, 2*2*4*3+10)},
			wantReady: []string{"ct.mhd mhd ct.mhd,ct.raw"},
		},
		{
			name:        "mhd whose data file is missing",
			files:       map[string][]byte{"ct.mhd": mhdText("4 3 2", "MET_SHORT", "ct.raw", "")},
			wantWaiting: map[string]string{"ct.mhd": "waiting for data file ct.raw"},
		},
		{
			name:        "mhd whose data file is short",
			files:       map[string][]byte{"ct.mhd": mhdText("4 3 2", "MET_SHORT", "ct.raw", ""), "ct.raw": make([]byte, 10)},
			wantWaiting: map[string]string{"ct.mhd": "incomplete: ct.raw (header says 48 bytes, file has 10)"},
		},
		{
			name:      "mhd with compressed data: the zraw only has to exist",
			files:     map[string][]byte{"ct.mhd": mhdText("400 300 200", "MET_SHORT", "ct.zraw", "CompressedData = True\n"), "ct.zraw": make([]byte, 7)},
			wantReady: []string{"ct.mhd mhd ct.mhd,ct.zraw"},
		},
		{
			name:      "mhd with LOCAL data is one file",
			files:     map[string][]byte{"ct.mhd": append(mhdText("1 1 1", "MET_UCHAR", "LOCAL", ""), 0)},
			wantReady: []string{"ct.mhd single ct.mhd"},
		},
		{
			name: "mhd with LIST, a pattern or a path outside its folder is its own image",
			files: map[string][]byte{
				"list.mhd":    mhdText("1 1 2", "MET_UCHAR", "LIST 2D", ""),
				"pattern.mhd": mhdText("1 1 2", "MET_UCHAR", "slice%03d.raw 1 2 1", ""),
				"escape.mhd":  mhdText("1 1 2", "MET_UCHAR", "../ct.raw", ""),
			},
			wantReady: []string{"escape.mhd single escape.mhd", "list.mhd single list.mhd", "pattern.mhd single pattern.mhd"},
		},
		{
			name:  "a data file no header names is ignored",
			files: map[string][]byte{"orphan.raw": make([]byte, 8)},
		},
		{
			name: "DICOM series by UIDs within a folder, not by name",
			files: map[string][]byte{
				"s/IM0001": dcmA(1), "s/IM0002": dcmA(2), "s/x.dcm": dcmA(3),
				"s/other.dcm": makeDICOM(studyA, seriesB, testCTClass, seriesB+".1", 64),
				"t/IM0009":    makeDICOM(studyA, seriesB, testCTClass, seriesB+".2", 64),
			},
			wantReady: []string{
				seriesKey + " zip s/IM0001,s/IM0002,s/x.dcm",
				"dicom:s/" + studyA + "/" + seriesB + "/" + testCTClass + " zip s/other.dcm",
				"dicom:t/" + studyA + "/" + seriesB + "/" + testCTClass + " zip t/IM0009",
			},
		},
		{
			name:      "same series, different SOP class: two images",
			files:     map[string][]byte{"a": dcmA(1), "b": makeDICOM(studyA, seriesA, testMRClass, seriesA+".7", 64)},
			wantReady: []string{"dicom:./" + studyA + "/" + seriesA + "/" + testCTClass + " zip a", "dicom:./" + studyA + "/" + seriesA + "/" + testMRClass + " zip b"},
		},
		{
			// It waits for the DICOM settle time (TestDICOMTruncatedGoesOnAfterSettle),
			// here the same as Settle, then goes on, to fail in the pipeline with the file named.
			name: "truncated DICOM goes on after the settle time",
			files: map[string][]byte{
				"s/IM0001": dcmA(1)[:len(dcmA(1))-100], // cut in the pixel data: its series is known
				"t/IM0001": dcmA(1)[:200],              // cut before its UIDs: a file of its own
			},
			wantReady: []string{seriesKey + " zip s/IM0001", "dicom:t/IM0001 zip t/IM0001"},
		},
		{
			name: "DICOM without a series UID or with a broken header is its own image",
			files: map[string][]byte{
				"noseries.dcm": dicomSpec{study: studyA, sopClass: testCTClass, instance: "1.9", pixels: 8, noSeries: true}.bytes(),
				"nomagic.dcm":  bytes.Repeat([]byte{1}, 200),
				"badvr": func() []byte {
					b := dcmA(1)
					i := bytes.Index(b, []byte("PN"))
					b[i] = 1
					return b
				}(),
			},
			wantReady: []string{"badvr single badvr", "nomagic.dcm single nomagic.dcm", "dicom:noseries.dcm zip noseries.dcm"},
		},
		{
			name:  "unknown types are left alone",
			files: map[string][]byte{"notes.txt": []byte("hello"), "report.docx": bytes.Repeat([]byte{'x'}, 300), "tiny": []byte("x")},
		},
		{
			name: "mrxs with its slide folder",
			files: map[string][]byte{
				"slides/s1.mrxs":              []byte("x"),
				"slides/s1/Slidedat.ini":      []byte("[GENERAL]\nX=1\n[DATAFILE]\nFILE_COUNT=2\nFILE_0=Data0000.dat\nFILE_1=Data0001.dat\n"),
				"slides/s1/Data0000.dat":      []byte("d"),
				"slides/s1/Data0001.dat":      []byte("d"),
				"slides/s1/sub/Index.dat.bin": []byte("d"),
			},
			wantReady: []string{"slides/s1.mrxs zip slides/s1.mrxs,slides/s1/Data0000.dat,slides/s1/Data0001.dat,slides/s1/Slidedat.ini,slides/s1/sub/Index.dat.bin"},
		},
		{
			name:        "mrxs without Slidedat.ini waits",
			files:       map[string][]byte{"s1.mrxs": []byte("x"), "s1/Data0000.dat": []byte("d")},
			wantWaiting: map[string]string{"s1.mrxs": "waiting for s1/Slidedat.ini"},
		},
		{
			name: "mrxs waits for the data files Slidedat.ini lists",
			files: map[string][]byte{
				"s1.mrxs": []byte("x"), "s1/Slidedat.ini": []byte("[DATAFILE]\nFILE_0=Data0000.dat\nFILE_1=Data0001.dat\n"), "s1/Data0000.dat": []byte("d"),
			},
			wantWaiting: map[string]string{"s1.mrxs": "waiting for s1/Data0001.dat"},
		},
		{
			name: "vms with the files it lists, which are not images of their own",
			files: map[string][]byte{
				"w/slide.vms":     []byte("[Virtual Microscope Specimen]\nNoLayers=1\nImageFile=slide.jpg\nImageFile(1,0)=slide_1.jpg\nMapFile=slide_map.jpg\nOptimisationFile=slide.opt\n"),
				"w/slide.jpg":     []byte("j"),
				"w/slide_1.jpg":   []byte("j"),
				"w/slide_map.jpg": []byte("j"),
				"w/slide.opt":     []byte("o"),
			},
			wantReady: []string{"w/slide.vms zip w/slide.jpg,w/slide.opt,w/slide.vms,w/slide_1.jpg,w/slide_map.jpg"},
		},
		{
			name:        "vms waits for a listed file",
			files:       map[string][]byte{"slide.vms": []byte("ImageFile=slide.jpg\nMapFile=slide_map.jpg\n"), "slide.jpg": []byte("j")},
			wantWaiting: map[string]string{"slide.vms": "waiting for slide_map.jpg"},
		},
		{
			name: "hidden, temporary and excluded names are never picked up",
			files: map[string][]byte{
				".hidden.mha": []byte("x"), "a.mha.part": []byte("x"), "b.TMP": []byte("x"), "~lock.mha": []byte("x"),
				".git/c.mha": []byte("x"), "x/.cache/d.mha": []byte("x"), "skip_me.mha": []byte("x"), "e.mha.bak": []byte("x"),
				"__MACOSX/f.mha": []byte("x"), "desktop.ini": []byte("x"), "keep.mha": []byte("x"),
				"done/g.mha": []byte("x"), "failed/h.mha": []byte("x"),
			},
			exclude:   []string{"skip_*", "*.bak"},
			wantReady: []string{"keep.mha single keep.mha"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTree(t)
			for rel, data := range tt.files {
				tr.write(rel, data)
			}
			w := tr.watch("auto")
			w.Exclude = tt.exclude
			w.DoneDir, w.FailedDir = tr.abs("done"), tr.abs("failed")
			w.IncompleteWait = 24 * time.Hour // a cut file still waits at the last look
			g := NewGrouper(w, nil)
			tr.scan(g, t0)
			if got := g.Ready(t0.Add(testSettle - time.Second)); len(got) != 0 {
				t.Fatalf("ready before settle: %v", describe(got))
			}
			tr.scan(g, t0.Add(testSettle))
			got := describe(g.Ready(t0.Add(testSettle)))
			want := slices.Clone(tt.wantReady)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("ready:\n got  %q\n want %q", got, want)
			}
			waiting := describeWaiting(g.Waiting(t0.Add(testSettle)))
			for key, reason := range tt.wantWaiting {
				if !strings.Contains(waiting[key], reason) {
					t.Errorf("waiting[%q] = %q; want it to contain %q", key, waiting[key], reason)
				}
			}
			if len(waiting) != len(tt.wantWaiting) {
				t.Errorf("waiting = %q; want keys of %q", waiting, tt.wantWaiting)
			}
			if again := g.Ready(t0.Add(time.Hour)); len(again) != 0 {
				t.Errorf("returned again with unchanged content: %v", describe(again))
			}
		})
	}
}

func TestExcludedDoneDirOutsideRoot(t *testing.T) {
	tr := newTree(t)
	w := tr.watch("auto")
	w.DoneDir = t.TempDir()
	g := NewGrouper(w, nil)
	if g.Excluded(tr.abs("done/x.mha")) {
		t.Errorf("done/x.mha excluded although the done folder is elsewhere")
	}
	if !g.Excluded(tr.abs("x/.y/z.mha")) || !g.Excluded(os.TempDir()+"/elsewhere.mha") {
		t.Errorf("a file under a hidden folder or outside the root was not excluded")
	}
}
