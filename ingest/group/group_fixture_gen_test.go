package group

import (
	"bytes"
	"compress/gzip"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// writeFixtures regenerates testdata/group from groupFixtureCases:
//
//	go test ./ingest/group/ -run TestWriteGroupFixtures -args -write-fixtures
//
// A test flag is package-level by necessity (the testing package parses
// flags before any test runs); nothing else reads it.
var writeFixtures = flag.Bool("write-fixtures", false, "rewrite ingest/group/testdata/group from groupFixtureCases")

// UIDs of the fixture DICOM files; the expected group keys are built from
// them, so a key in expect.txt says which file each series came from.
const (
	fixStudy   = "1.2.826.0.1.3680043.10.1"
	fixSeriesA = "1.2.826.0.1.3680043.10.1.1"
	fixSeriesB = "1.2.826.0.1.3680043.10.1.2"
)

func fixDICOM(series, class string, i int) []byte {
	return makeDICOM(fixStudy, series, class, series+"."+strconv.Itoa(i), 256)
}

func fixKey(folder, series, class string) string {
	return "dicom:" + folder + "/" + fixStudy + "/" + series + "/" + class
}

// fixtureCase is one folder under testdata/group: the files of its drop/
// tree, the watch options (watch.txt) and the expected outcome (expect.txt,
// written by hand here, never derived from what the grouper does).
type fixtureCase struct {
	name   string
	about  string // first line of expect.txt, a comment
	watch  []string
	files  map[string][]byte
	expect []string
}

// q quotes a name for expect.txt when it would not read back as one token.
func q(name string) string {
	if name == "" || strings.ContainsAny(name, " \t\":") || !strconv.CanBackquote(name) {
		return strconv.Quote(name)
	}
	return name
}

// qs quotes and joins names.
func qs(names ...string) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = q(n)
	}
	return strings.Join(out, " ")
}

func groupFixtureCases() []fixtureCase {
	// 4×4×2 MET_SHORT: the data file must hold 64 bytes.
	brainMHD := mhdText("4 4 2", "MET_SHORT", "brain.raw", "")
	ctA := testCTClass
	mrB := testMRClass
	truncated := fixDICOM(fixSeriesA, ctA, 3)
	truncated = truncated[:len(truncated)-100]  // cut in the pixel data: the series is known
	early := fixDICOM(fixSeriesB, ctA, 1)[:200] // cut before the UIDs
	noSeries := func(i int) []byte {
		return dicomSpec{study: fixStudy, sopClass: ctA, instance: fixStudy + ".9." + strconv.Itoa(i), pixels: 256, noSeries: true}.bytes()
	}
	text := []byte(strings.Repeat("free text that is no image at all\n", 10))
	var niiGz []byte
	{
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write(niftiBytes(64))
		zw.Close()
		niiGz = b.Bytes()
	}
	slidedat := func(n int) []byte {
		s := "[GENERAL]\nSLIDE_VERSION=01.02\n[DATAFILE]\nFILE_COUNT=" + strconv.Itoa(n) + "\n"
		for i := range n {
			s += "FILE_" + strconv.Itoa(i) + "=Data000" + strconv.Itoa(i) + ".dat\n"
		}
		return []byte(s)
	}
	return []fixtureCase{
		{
			name: "lone-mha", about: "a lone .mha is one image of one file",
			files:  map[string][]byte{"ct.mha": mhaBytes(4, 4, 2)},
			expect: []string{"ready single ct.mha"},
		},
		{
			name: "nii-gz", about: ".nii.gz is a lone image whatever the case of its double extension",
			files:  map[string][]byte{"brain.nii.gz": niiGz, "upper/T1.NII.GZ": niiGz},
			expect: []string{"ready single brain.nii.gz", "ready single upper/T1.NII.GZ"},
		},
		{
			name: "mhd-with-raw", about: "an .mhd and the data file it names, at the size the header implies, are one image",
			files: map[string][]byte{
				"brain.mhd": brainMHD, "brain.raw": make([]byte, 64),
				// Compressed: the header cannot tell the size, so the file only has to be there.
				"lung.mhd": mhdText("4 4 2", "MET_SHORT", "lung.zraw", "CompressedData = True\n"), "lung.zraw": []byte{0x78, 0x9c, 3, 0},
			},
			expect: []string{"ready mhd brain.mhd brain.raw", "ready mhd lung.mhd lung.zraw"},
		},
		{
			name: "mhd-raw-missing", about: "an .mhd whose data file is not there waits for it by name",
			files:  map[string][]byte{"brain.mhd": brainMHD},
			expect: []string{"waiting mhd brain.mhd: waiting for data file brain.raw"},
		},
		{
			name: "mhd-raw-short", about: "an .mhd whose data file is shorter than the header implies waits (for incomplete_wait), naming the data file and both sizes",
			watch:  []string{"incomplete_wait = 24h"},
			files:  map[string][]byte{"brain.mhd": brainMHD, "brain.raw": make([]byte, 40)},
			expect: []string{"waiting mhd brain.mhd brain.raw: incomplete: brain.raw (header says 64 bytes, file has 40)"},
		},
		{
			name: "cut-images", about: "images their own headers prove cut wait (for incomplete_wait) naming the file and both sizes, however long unchanged; whole ones, and ones longer than their header says, go on",
			watch: []string{"incomplete_wait = 24h"},
			files: map[string][]byte{
				"ct.mha": mhaBytes(8, 8, 4)[:200], "whole.mha": mhaBytes(8, 8, 4), "long.nii": append(niftiBytes(100), 0),
				"brain.nii": niftiBytes(1000)[:900], "slide.tif": tiffBytes(500)[:300], "seg.nrrd": nrrdBytes(100)[:120],
			},
			expect: []string{
				"waiting single ct.mha: incomplete: ct.mha (header says " + strconv.Itoa(len(mhaBytes(8, 8, 4))) + " bytes, file has 200)",
				"waiting single brain.nii: incomplete: brain.nii (header says 1352 bytes, file has 900)",
				"waiting single slide.tif: incomplete: slide.tif (header says at least 510 bytes, file has 300)",
				"waiting single seg.nrrd: incomplete: seg.nrrd (header says " + strconv.Itoa(len(nrrdBytes(100))) + " bytes, file has 120)",
				"ready single whole.mha", "ready single long.nii",
			},
		},
		{
			name: "dicom-series-no-ext", about: "three DICOM files of one series, named without .dcm, are one image",
			files: map[string][]byte{
				"series/IM1": fixDICOM(fixSeriesA, ctA, 1),
				"series/IM2": fixDICOM(fixSeriesA, ctA, 2),
				"series/IM3": fixDICOM(fixSeriesA, ctA, 3),
			},
			expect: []string{"ready zip " + fixKey("series", fixSeriesA, ctA) + " series/IM1 series/IM2 series/IM3"},
		},
		{
			name: "dicom-interleaved", about: "two series whose files alternate in one folder are two images",
			files: map[string][]byte{
				"mixed/0001": fixDICOM(fixSeriesA, ctA, 1),
				"mixed/0002": fixDICOM(fixSeriesB, mrB, 1),
				"mixed/0003": fixDICOM(fixSeriesA, ctA, 2),
				"mixed/0004": fixDICOM(fixSeriesB, mrB, 2),
				"mixed/0005": fixDICOM(fixSeriesA, ctA, 3),
			},
			expect: []string{
				"ready zip " + fixKey("mixed", fixSeriesA, ctA) + " mixed/0001 mixed/0003 mixed/0005",
				"ready zip " + fixKey("mixed", fixSeriesB, mrB) + " mixed/0002 mixed/0004",
			},
		},
		{
			name: "dicom-truncated", about: "a DICOM file that does not parse to its end holds back its series until the DICOM settle time, then goes on with it (to fail, naming the file); one cut before its UIDs goes on alone",
			files: map[string][]byte{
				"s/IM1":     fixDICOM(fixSeriesA, ctA, 1),
				"s/IM2":     fixDICOM(fixSeriesA, ctA, 2),
				"s/IM3":     truncated,
				"early/IM1": early,
			},
			expect: []string{
				"ready zip " + fixKey("s", fixSeriesA, ctA) + " s/IM1 s/IM2 s/IM3",
				"ready zip dicom:early/IM1 early/IM1",
			},
		},
		{
			name: "dicom-no-series", about: "DICOM files without SeriesInstanceUID are each an image of their own (a DICOM group, so de-identified like any)",
			files:  map[string][]byte{"a/IM1": noSeries(1), "a/IM2.dcm": noSeries(2)},
			expect: []string{"ready zip dicom:a/IM1 a/IM1", "ready zip dicom:a/IM2.dcm a/IM2.dcm"},
		},
		{
			name: "hidden-temp", about: "hidden and temporary names are never picked up, not even as ignored",
			files: map[string][]byte{
				".x.mha": []byte("x"), "a.tmp": []byte("x"), "b.part": []byte("x"), "~c.mha": []byte("x"),
				"A.TMP": []byte("x"), ".hidden/d.mha": []byte("x"), "sub/.e.mha": []byte("x"),
				"real.mha": []byte("x"),
			},
			expect: []string{"ready single real.mha"},
		},
		{
			name: "exclude", about: "exclude patterns match base names at any depth; excluded files are not even ignored",
			watch: []string{"exclude = *.bak", "exclude = scratch*"},
			files: map[string][]byte{
				"ct.mha": []byte("x"), "ct.mha.bak": []byte("x"), "scratch.mha": []byte("x"), "d/scratch 2.nii": []byte("x"),
				"d/keep.nii": []byte("x"), "notes.txt": text,
			},
			expect: []string{"ready single ct.mha", "ready single d/keep.nii", "ignored notes.txt: unknown file type"},
		},
		{
			name: "file-mode", about: "group = file: every file is an image of its own, whatever it is",
			watch: []string{"group = file", "exclude = *.bak"},
			files: map[string][]byte{
				"brain.mhd": brainMHD, "brain.raw": make([]byte, 64), "notes.txt": text, "old.bak": text,
				"s/IM1": fixDICOM(fixSeriesA, ctA, 1), "s/IM2": fixDICOM(fixSeriesA, ctA, 2),
			},
			expect: []string{
				"ready single brain.mhd", "ready single brain.raw", "ready single notes.txt",
				"ready single s/IM1", "ready single s/IM2",
			},
		},
		{
			name: "unknown-ext", about: "files of unknown type (and a data file no header names) are ignored with the reason",
			files: map[string][]byte{
				"notes.txt": text, "tiny.xyz": []byte("tiny"), "orphan.raw": make([]byte, 64), "ok.mha": []byte("x"),
				"broken.dcm": text, // named DICOM but is not: an image of its own, for the server to judge
			},
			expect: []string{
				"ready single ok.mha",
				"ready single broken.dcm",
				"ignored notes.txt: unknown file type",
				"ignored orphan.raw: data file that no .mhd header names",
				"ignored tiny.xyz: unknown file type",
			},
		},
		{
			name: "mrxs", about: "an .mrxs is one image with its folder; it waits for the data files Slidedat.ini lists",
			files: map[string][]byte{
				"slide.mrxs": []byte("mrxs"), "slide/Slidedat.ini": slidedat(2),
				"slide/Data0000.dat": []byte("d0"), "slide/Data0001.dat": []byte("d1"),
				"other.mrxs": []byte("mrxs"), "other/Slidedat.ini": slidedat(2), "other/Data0000.dat": []byte("d0"),
			},
			expect: []string{
				"ready zip slide.mrxs slide/Data0000.dat slide/Data0001.dat slide/Slidedat.ini",
				"waiting zip other.mrxs other/Data0000.dat other/Slidedat.ini: waiting for other/Data0001.dat",
			},
		},
		{
			name: "vms", about: "a .vms is one image with the files it lists, even those that look like images of their own",
			files: map[string][]byte{
				"w/slide.vms": []byte("[Virtual Microscope Specimen]\nNoLayers=1\nImageFile=slide.jpg\nMapFile=slide_map.jpg\nOptimisationFile=slide.opt\n"),
				"w/slide.jpg": []byte("j"), "w/slide_map.jpg": []byte("m"), "w/slide.opt": []byte("o"),
				"v/part.vms": []byte("ImageFile=part.jpg\nMapFile=part_map.jpg\n"), "v/part.jpg": []byte("j"),
			},
			expect: []string{
				"ready zip w/slide.vms w/slide.jpg w/slide.opt w/slide_map.jpg",
				"waiting zip v/part.vms v/part.jpg: waiting for part_map.jpg",
			},
		},
		{
			name: "odd-names", about: "names with spaces, unicode and # group like any others",
			files: map[string][]byte{
				"scan 1.mha":                  []byte("x"),
				"Überblick_脳.nii.gz":          niiGz,
				"case#2.mha":                  []byte("x"),
				"my brain.mhd":                mhdText("4 4 2", "MET_SHORT", "my brain.raw", ""),
				"my brain.raw":                make([]byte, 64),
				"patient #1/série 2/IM 1":     fixDICOM(fixSeriesA, ctA, 1),
				"patient #1/série 2/IM 2":     fixDICOM(fixSeriesA, ctA, 2),
				"patient #1/série 2/notes #1": text,
				"slide 1.mrxs":                []byte("mrxs"),
				"slide 1/Slidedat.ini":        slidedat(1),
				"slide 1/Data0000.dat":        []byte("d0"),
			},
			expect: []string{
				"ready single " + qs("scan 1.mha"),
				"ready single " + qs("Überblick_脳.nii.gz"),
				"ready single " + qs("case#2.mha"),
				"ready mhd " + qs("my brain.mhd", "my brain.raw"),
				"ready zip " + qs(fixKey("patient #1/série 2", fixSeriesA, ctA)) + " " + qs("patient #1/série 2/IM 1", "patient #1/série 2/IM 2"),
				"ignored " + qs("patient #1/série 2/notes #1") + ": unknown file type",
				"ready zip " + qs("slide 1.mrxs", "slide 1/Data0000.dat", "slide 1/Slidedat.ini"),
			},
		},
		{
			name: "folder-mode", about: "group = folder: each direct subfolder is one item; files directly in the drop folder are ignored",
			watch: []string{"group = folder"},
			files: map[string][]byte{
				"case1/ct.mha": []byte("x"), "case1/notes.txt": text,
				"case2/brain.mhd": brainMHD, "case2/brain.raw": make([]byte, 64), "case2/deep/IM1": fixDICOM(fixSeriesA, ctA, 1),
				"case3/brain.mhd":  brainMHD,
				"case #4 ü/ct.mha": []byte("x"),
				".cache/x.mha":     []byte("x"),
				"readme.txt":       text,
			},
			expect: []string{
				"ready folder case1 case1/ct.mha case1/notes.txt",
				"ready folder case2 case2/brain.mhd case2/brain.raw case2/deep/IM1",
				"ready folder " + qs("case #4 ü", "case #4 ü/ct.mha"),
				"waiting folder case3 case3/brain.mhd: waiting for data file brain.raw",
				"ignored readme.txt: folder mode: only subfolders are items",
			},
		},
	}
}

// TestWriteGroupFixtures writes testdata/group/<case>/{drop/,watch.txt,expect.txt}.
// It runs only with -write-fixtures; TestGroupFixtures reads what it wrote.
func TestWriteGroupFixtures(t *testing.T) {
	if !*writeFixtures {
		t.Skip("run with -args -write-fixtures to rewrite testdata/group")
	}
	for _, c := range groupFixtureCases() {
		dir := filepath.Join("testdata", "group", c.name)
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		for rel, data := range c.files {
			p := filepath.Join(dir, "drop", filepath.FromSlash(rel))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if len(c.watch) > 0 {
			if err := os.WriteFile(filepath.Join(dir, "watch.txt"), []byte(strings.Join(c.watch, "\n")+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		lines := append([]string(nil), c.expect...)
		sort.Strings(lines)
		body := "# " + c.about + "\n" + strings.Join(lines, "\n") + "\n"
		if err := os.WriteFile(filepath.Join(dir, "expect.txt"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
