package pull

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gcingest/gcingest/gcapi"
)

func TestSanitize(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain title", "case042", "case042"},
		{"our default title", "scanner1/case042/ct.mha [3f9a1c2b7e4d]", "scanner1_case042_ct.mha [3f9a1c2b7e4d]"},
		{"parent traversal", "../../etc/passwd", "____etc_passwd"},
		{"dot dot alone", "..", ""},
		{"dot alone", ".", ""},
		{"absolute path", "/etc/passwd", "_etc_passwd"},
		{"windows path", `C:\Windows\system32`, "C__Windows_system32"},
		{"leading dot hides", ".bashrc", "_bashrc"},
		{"control characters", "evil\x1b[31m\nname\x00", "evil_[31m_name_"},
		{"bidi override", "scan\u202egpj.exe", "scan_gpj.exe"},
		{"windows reserved chars", `a<b>c:d"e|f?g*h`, "a_b_c_d_e_f_g_h"},
		{"trailing dots and spaces", "name. . ", "name"},
		{"windows device", "CON", "_CON"},
		{"windows device with ext", "com1.txt", "_com1.txt"},
		{"not a device", "CONSOLE", "CONSOLE"},
		{"invalid utf8", "a\xffb", "a_b"},
		{"unicode kept", "Röntgen 肺", "Röntgen 肺"},
		{"empty", "", ""},
		{"only spaces", "   ", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Sanitize(tt.in); got != tt.want {
				t.Errorf("Sanitize(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestSanitizeLengthCap(t *testing.T) {
	long := strings.Repeat("é", 200) // 400 bytes
	got := Sanitize(long)
	if len(got) > maxNameBytes {
		t.Errorf("len = %d, want at most %d", len(got), maxNameBytes)
	}
	if !utf8.ValidString(got) {
		t.Errorf("truncated name %q is not valid UTF-8", got)
	}
}

// FuzzSanitize checks the promises of Sanitize on any input: the result is
// one path component that stays inside its parent.
func FuzzSanitize(f *testing.F) {
	for _, s := range []string{"../../etc/passwd", "a/b", "\x00", "..", " . ", "CON", "é\u202e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got := Sanitize(in)
		if got == "" {
			return
		}
		if len(got) > maxNameBytes || !utf8.ValidString(got) {
			t.Fatalf("Sanitize(%q) = %q: too long or invalid UTF-8", in, got)
		}
		if strings.ContainsAny(got, `/\`) || strings.Contains(got, "..") || strings.HasPrefix(got, ".") {
			t.Fatalf("Sanitize(%q) = %q: separator, .. or leading dot", in, got)
		}
		for _, r := range got {
			if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
				t.Fatalf("Sanitize(%q) = %q: control or format character %U", in, got, r)
			}
		}
		if filepath.Base(got) != got || filepath.IsAbs(got) {
			t.Fatalf("Sanitize(%q) = %q: not a single relative component", in, got)
		}
	})
}

func TestItemFolders(t *testing.T) {
	t.Run("distinct titles keep their names", func(t *testing.T) {
		got := itemFolders([]itemRef{{"p1", "case1"}, {"p2", "case2"}})
		want := map[string]string{"p1": "case1", "p2": "case2"}
		assertFolders(t, got, want)
	})
	t.Run("empty title falls back to pk", func(t *testing.T) {
		got := itemFolders([]itemRef{{"p1", ""}, {"p2", "../.."}})
		want := map[string]string{"p1": "p1", "p2": "p2"}
		assertFolders(t, got, want)
	})
	t.Run("titles colliding after sanitising get their pk", func(t *testing.T) {
		got := itemFolders([]itemRef{{"p2", "a_b"}, {"p1", "a/b"}, {"p3", "c"}})
		want := map[string]string{"p1": "a_b [p1]", "p2": "a_b [p2]", "p3": "c"}
		assertFolders(t, got, want)
	})
	t.Run("titles differing only in case collide", func(t *testing.T) {
		got := itemFolders([]itemRef{{"p1", "Case"}, {"p2", "case"}})
		want := map[string]string{"p1": "Case [p1]", "p2": "case [p2]"}
		assertFolders(t, got, want)
	})
	t.Run("suffixed name taken by another title", func(t *testing.T) {
		got := itemFolders([]itemRef{{"p1", "x"}, {"p2", "x"}, {"p3", "x [p1]"}})
		if got["p3"] != "x [p1]" {
			t.Errorf("p3 folder = %q, want its own title", got["p3"])
		}
		if got["p1"] == got["p3"] || got["p1"] == got["p2"] {
			t.Errorf("folders not distinct: %v", got)
		}
	})
	t.Run("order of listing does not matter", func(t *testing.T) {
		a := itemFolders([]itemRef{{"p1", "x"}, {"p2", "x"}, {"p3", "y"}})
		b := itemFolders([]itemRef{{"p3", "y"}, {"p2", "x"}, {"p1", "x"}})
		assertFolders(t, a, b)
	})
	t.Run("long colliding titles stay under the cap", func(t *testing.T) {
		long := strings.Repeat("a", 300)
		pk := "0c2b6a66-5ad4-4b6e-9a53-0b4b3b0e3c11"
		got := itemFolders([]itemRef{{pk, long + "1"}, {"p2", long + "2"}})
		for k, v := range got {
			if len(v) > maxNameBytes {
				t.Errorf("%s: folder %q has %d bytes, want at most %d", k, v, len(v), maxNameBytes)
			}
		}
		if got[pk] == got["p2"] {
			t.Errorf("folders not distinct: %v", got)
		}
	})
}

func assertFolders(t *testing.T, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d folders %v, want %v", len(got), got, want)
	}
	seen := map[string]string{}
	for pk, w := range want {
		if got[pk] != w {
			t.Errorf("folder of %s = %q, want %q", pk, got[pk], w)
		}
	}
	for pk, f := range got {
		if other, dup := seen[fold(f)]; dup {
			t.Errorf("items %s and %s share folder %q", other, pk, f)
		}
		seen[fold(f)] = pk
	}
}

func TestFileExt(t *testing.T) {
	tests := []struct{ url, want string }{
		{"http://h/media/images/1/abc.mha", ".mha"},
		{"http://h/media/images/1/abc.TIF", ".tif"},
		{"http://h/media/components/9/report.pdf?X-Amz-Signature=s", ".pdf"},
		{"http://h/media/components/9/scan.nii.gz", ".nii.gz"},
		{"http://h/media/components/9/noext", ""},
		{"http://h/media/components/9/.hidden", ""},
		{"http://h/media/components/9/a.b%2Fc", ""},
		{"http://h/media/components/9/a.p%00df", ""},
		{"http://h/", ""},
	}
	for _, tt := range tests {
		if got := fileExt(tt.url); got != tt.want {
			t.Errorf("fileExt(%q) = %q, want %q", tt.url, got, tt.want)
		}
	}
}

func strp(s string) *string { return &s }

func TestPlanItems(t *testing.T) {
	img := func(pk string, files ...gcapi.ImageFile) *gcapi.Image {
		return &gcapi.Image{PK: pk, Files: files, APIURL: "http://h/api/v1/cases/images/" + pk + "/"}
	}
	images := map[string]*gcapi.Image{
		"i1": img("i1",
			gcapi.ImageFile{File: "http://h/media/images/i1/i1.dzi", ImageType: gcapi.ImageTypeDZI},
			gcapi.ImageFile{File: "http://h/media/images/i1/i1.tif", ImageType: gcapi.ImageTypeTIFF}),
		"i2": img("i2",
			gcapi.ImageFile{File: "http://h/media/images/i2/i2.zraw", ImageType: gcapi.ImageTypeMHD},
			gcapi.ImageFile{File: "http://h/media/images/i2/i2.mhd", ImageType: gcapi.ImageTypeMHD}),
		"i3": img("i3", gcapi.ImageFile{File: "http://h/media/images/i3/i3.dzi", ImageType: gcapi.ImageTypeDZI}),
		"i4": {PK: "i4", DICOMImageSet: &gcapi.DICOMImageSet{ImageSetID: "s4"}},
		"i5": {PK: "i5", DICOMImageSet: &gcapi.DICOMImageSet{ImageSetID: "s5"}},
	}
	// A hostile server's instance list: a repeat (one entry per frame),
	// names that would escape, nothing, a device name, a case-folded twin.
	src := &setSource{imagePK: "i4", setID: "s4"}
	instances := &gcapi.DICOMInstances{ImageSetID: "s4"}
	for _, sop := range []string{"1.2.3", "1.2.3", "../../../etc/passwd", "", "..", "CON", "A.1", "a.1"} {
		instances.Instances = append(instances.Instances, gcapi.DICOMInstance{SOPInstanceUID: sop,
			GetInstance: gcapi.SignedRequest{URL: "https://hi/instances/" + sop, Method: "GET"}})
	}
	src.load(instances, time.Now())
	sets := map[string]*setSource{"i4": src, "i5": {imagePK: "i5", setID: "s5", err: errors.New("boom")}}
	items := []gcapi.ArchiveItem{{
		PK: "p1", Title: "case1",
		Values: []gcapi.ItemValue{
			{PK: 1, Interface: gcapi.Interface{Slug: "slide", SuperKind: gcapi.SuperKindImage}, Image: strp("http://h/api/v1/cases/images/i1/")},
			{PK: 2, Interface: gcapi.Interface{Slug: "ct", SuperKind: gcapi.SuperKindImage}, Image: strp("http://h/api/v1/cases/images/i2/")},
			{PK: 3, Interface: gcapi.Interface{Slug: "report", SuperKind: gcapi.SuperKindFile}, File: strp("http://h/media/components/3/report.pdf")},
			{PK: 4, Interface: gcapi.Interface{Slug: "volume", SuperKind: gcapi.SuperKindValue}, Value: json.RawMessage(`1.5`)},
			{PK: 5, Interface: gcapi.Interface{Slug: "big-json", SuperKind: gcapi.SuperKindValue}, File: strp("http://h/media/components/5/big.json")},
			{PK: 6, Interface: gcapi.Interface{Slug: "values", SuperKind: gcapi.SuperKindFile}, File: strp("http://h/media/components/6/v.json")},
			{PK: 7, Interface: gcapi.Interface{Slug: "pyramid-only", SuperKind: gcapi.SuperKindImage}, Image: strp("http://h/api/v1/cases/images/i3/")},
			{PK: 8, Interface: gcapi.Interface{Slug: "../escape", SuperKind: gcapi.SuperKindFile}, File: strp("http://h/media/components/8/x.csv")},
			{PK: 9, Interface: gcapi.Interface{Slug: "series", SuperKind: gcapi.SuperKindImage}, Image: strp("http://h/api/v1/cases/images/i4/")},
			{PK: 10, Interface: gcapi.Interface{Slug: "broken-series", SuperKind: gcapi.SuperKindImage}, Image: strp("http://h/api/v1/cases/images/i5/")},
		},
	}}

	t.Run("all sockets", func(t *testing.T) {
		plans := planItems(items, images, sets, nil, nil)
		if len(plans) != 1 {
			t.Fatalf("got %d plans, want 1", len(plans))
		}
		ip := plans[0]
		got := map[string]string{}
		for _, j := range ip.jobs {
			got[j.name] = j.url
		}
		want := map[string]string{
			"slide.tif":     "http://h/media/images/i1/i1.tif",
			"ct.mhd":        "http://h/media/images/i2/i2.mhd",
			"i2.zraw":       "http://h/media/images/i2/i2.zraw", // the header names it
			"report.pdf":    "http://h/media/components/3/report.pdf",
			"big-json.json": "http://h/media/components/5/big.json",
			"values-6.json": "http://h/media/components/6/v.json", // values.json is taken
			"__escape.csv":  "http://h/media/components/8/x.csv",
			// One folder per image set, staged under ".part" until whole.
			"series.part/1.2.3.dcm":            "https://hi/instances/1.2.3",
			"series.part/______etc_passwd.dcm": "https://hi/instances/../../../etc/passwd",
			"series.part/instance-3.dcm":       "https://hi/instances/",
			"series.part/instance-4.dcm":       "https://hi/instances/..",
			"series.part/_CON.dcm":             "https://hi/instances/CON",
			"series.part/A.1.dcm":              "https://hi/instances/A.1",
			"series.part/instance-7.dcm":       "https://hi/instances/a.1",
		}
		if len(got) != len(want) {
			t.Errorf("files = %v, want %v", got, want)
		}
		for name, u := range want {
			if got[name] != u {
				t.Errorf("file %q from %q, want from %q", name, got[name], u)
			}
		}
		if v := string(ip.values["volume"]); v != "1.5" || len(ip.values) != 1 {
			t.Errorf("JSON values = %v, want only volume=1.5", ip.values)
		}
		if all := fmt.Sprint(ip.errs); len(ip.errs) != 2 || !strings.Contains(all, "pyramid-only") || !strings.Contains(all, "broken-series") {
			t.Errorf("errs = %v, want one naming the DZI-only socket and one the unlisted set", ip.errs)
		}
	})

	t.Run("interface filter", func(t *testing.T) {
		plans := planItems(items, images, sets, nil, map[string]bool{"report": true, "volume": true})
		ip := plans[0]
		if len(ip.jobs) != 1 || ip.jobs[0].name != "report.pdf" {
			t.Errorf("jobs = %v, want only report.pdf", ip.jobs)
		}
		if len(ip.values) != 1 || len(ip.errs) != 0 {
			t.Errorf("values = %v, errs = %v; want volume only and no errors", ip.values, ip.errs)
		}
	})
}
