package group

import (
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/watch"
)

const testDoseClass = "1.2.840.10008.5.1.4.1.1.88.67"

// readyAfter feeds g a scan of tr at t0 and another at at, and returns
// what is ready then.
func readyAfter(tr *tree, g *Grouper, at time.Duration) []Group {
	tr.t.Helper()
	tr.scan(g, t0)
	tr.scan(g, t0.Add(time.Second))
	return g.Ready(t0.Add(at))
}

func TestDICOMGroupsAsTheServer(t *testing.T) {
	const study, s1, s2, s3 = "1.2.3", "1.2.3.1", "1.2.3.2", "1.2.3.3"
	dcm := func(series, class, inst, stack string) []byte {
		return dicomSpec{study: study, series: series, sopClass: class, instance: inst, pixels: 64, stackID: stack}.bytes()
	}
	tests := []struct {
		name  string
		files map[string][]byte
		want  []string // "folder files" per group: the key's folder and its files
	}{
		{
			name: "two series in one folder are two images",
			files: map[string][]byte{
				"ct/1": dcm(s1, testCTClass, s1+".1", ""), "ct/2": dcm(s1, testCTClass, s1+".2", ""),
				"ct/3": dcm(s2, testCTClass, s2+".1", ""), "ct/4": dcm(s2, testCTClass, s2+".2", ""),
			},
			want: []string{"ct ct/1,ct/2", "ct ct/3,ct/4"},
		},
		{
			name: "three series sharing a StackID are one 4D image",
			files: map[string][]byte{
				"4d/a": dcm(s1, testCTClass, s1+".1", "1"), "4d/b": dcm(s2, testCTClass, s2+".1", "1"),
				"4d/c": dcm(s3, testCTClass, s3+".1", "1"), "4d/d": dcm(s3, testCTClass, s3+".2", "1"),
			},
			want: []string{"4d 4d/a,4d/b,4d/c,4d/d"},
		},
		{
			name: "the same UIDs in two folders are two images",
			files: map[string][]byte{
				"x/1": dcm(s1, testCTClass, s1+".1", ""), "x/2": dcm(s1, testCTClass, s1+".2", ""),
				"y/1": dcm(s1, testCTClass, s1+".1", ""), "y/2": dcm(s1, testCTClass, s1+".2", ""),
			},
			want: []string{"x x/1,x/2", "y y/1,y/2"},
		},
		{
			name: "a dose report in a CT folder is its own group",
			files: map[string][]byte{
				"ct/1": dcm(s1, testCTClass, s1+".1", ""), "ct/2": dcm(s1, testCTClass, s1+".2", ""),
				"ct/dose": dcm(s1, testDoseClass, s1+".99", ""),
			},
			want: []string{"ct ct/1,ct/2", "ct ct/dose"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTree(t)
			for rel, b := range tt.files {
				tr.write(rel, b)
			}
			g := NewGrouper(watch.Spec{Path: tr.root, Settle: testSettle, DICOMSettle: time.Minute}, nil)
			ready := readyAfter(tr, g, 2*time.Minute)
			var got []string
			for _, gr := range ready {
				if !IsDICOMKey(gr.Key) || gr.Kind != KindZip || !strings.HasPrefix(gr.Label, "DICOM ") {
					t.Errorf("group %s: kind %s, label %q; want a DICOM zip with a label", gr.Key, gr.Kind, gr.Label)
				}
				folder, _, _ := strings.Cut(strings.TrimPrefix(gr.Key, "dicom:"), "/")
				var rels []string
				for _, f := range gr.Files {
					rels = append(rels, f.Rel)
				}
				got = append(got, folder+" "+strings.Join(rels, ","))
			}
			if strings.Join(got, "; ") != strings.Join(tt.want, "; ") {
				t.Errorf("got groups %q; want %q", got, tt.want)
			}
		})
	}
}

// TestDICOMSettle: a series is complete only after DICOMSettle without a
// new file; a late file brings the same group back with every file.
func TestDICOMSettleAndLateSlice(t *testing.T) {
	const study, series = "1.2.3", "1.2.3.1"
	dcm := func(i string) []byte {
		return dicomSpec{study: study, series: series, sopClass: testCTClass, instance: series + "." + i, pixels: 64}.bytes()
	}
	tr := newTree(t)
	tr.write("s/1", dcm("1"))
	tr.write("s/2", dcm("2"))
	g := NewGrouper(watch.Spec{Path: tr.root, Settle: testSettle, DICOMSettle: time.Minute}, nil)
	tr.scan(g, t0)
	tr.scan(g, t0.Add(time.Second))
	if got := g.Ready(t0.Add(30 * time.Second)); len(got) != 0 {
		t.Fatalf("ready before the DICOM settle time: %v", describe(got))
	}
	w := g.Waiting(t0.Add(30 * time.Second))
	if len(w) != 1 || !strings.Contains(w[0].Reason, "series settling") || w[0].Label == "" {
		t.Fatalf("waiting %+v; want the series settling, with a label", w)
	}
	if wake := g.NextWake(); !wake.Equal(t0.Add(time.Minute)) {
		t.Errorf("next wake %v; want the end of the DICOM settle time %v", wake, t0.Add(time.Minute))
	}
	first := g.Ready(t0.Add(time.Minute))
	if len(first) != 1 || len(first[0].Files) != 2 {
		t.Fatalf("got %v; want one series of two files", describe(first))
	}
	tr.write("s/3", dcm("3"))
	later := t0.Add(5 * time.Minute)
	tr.scan(g, later)
	tr.scan(g, later.Add(time.Second))
	if got := g.Ready(later.Add(30 * time.Second)); len(got) != 0 {
		t.Fatalf("late slice returned before its settle time: %v", describe(got))
	}
	second := g.Ready(later.Add(2 * time.Minute))
	if len(second) != 1 || second[0].Key != first[0].Key || len(second[0].Files) != 3 {
		t.Fatalf("after a late slice got %v; want %s again with all three files", describe(second), first[0].Key)
	}
}

// TestDICOMTruncatedGoesOnAfterSettle: a cut file holds its series back
// for the DICOM settle time, then the group is returned (the pipeline
// fails it, naming the file) instead of waiting for ever.
func TestDICOMTruncatedGoesOnAfterSettle(t *testing.T) {
	const study, series = "1.2.3", "1.2.3.1"
	tr := newTree(t)
	tr.write("s/1", dicomSpec{study: study, series: series, sopClass: testCTClass, instance: series + ".1", pixels: 64}.bytes())
	full := dicomSpec{study: study, series: series, sopClass: testCTClass, instance: series + ".2", pixels: 64}.bytes()
	tr.write("s/2", full[:len(full)-10])
	tr.write("early/1", full[:200])
	g := NewGrouper(watch.Spec{Path: tr.root, Settle: testSettle, DICOMSettle: time.Minute}, nil)
	tr.scan(g, t0)
	tr.scan(g, t0.Add(time.Second))
	w := describeWaiting(g.Waiting(t0.Add(30 * time.Second)))
	var reasons []string
	for _, r := range w {
		reasons = append(reasons, r)
	}
	if !strings.Contains(strings.Join(reasons, "|"), "DICOM file 2 not complete") {
		t.Errorf("waiting reasons %q; want the cut file named", reasons)
	}
	got := g.Ready(t0.Add(2 * time.Minute))
	if d := describe(got); len(d) != 2 || !strings.Contains(strings.Join(d, "|"), "s/1,s/2") || !strings.Contains(strings.Join(d, "|"), "dicom:early/1 zip early/1") {
		t.Errorf("after the settle time got %q; want the series with its cut file and the early-cut file alone", d)
	}
}
