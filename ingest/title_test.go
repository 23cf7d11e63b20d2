package ingest

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gcingest/gcingest/state"
)

func TestRenderTitle(t *testing.T) {
	files := []state.File{{Rel: "case042/ct.mha", SHA256: "aa"}}
	hash := titleHash(files)
	tests := []struct {
		name, tmpl, key string
		files           []state.File
		want            string
	}{
		{"default", "", "case042/ct.mha", files, "case042/ct.mha [" + hash + "]"},
		{"name only", "{name}", "case042/ct.mha", files, "ct.mha"},
		{"hash only", "scan {hash}", "case042/ct.mha", files, "scan " + hash},
		{"dicom key uses the folder", "{path}", "dicom:1.2/3.4/5",
			[]state.File{{Rel: "p1/series/a.dcm"}, {Rel: "p1/series/b.dcm"}}, "p1/series"},
		// The server trims a title (DRF CharField): one that starts or
		// ends with white space would never be found again.
		{"surrounding spaces trimmed", "{name}", " case/ scan.mha ", files, "scan.mha"},
		{"bidi and control characters dropped", "{name}", "case/scan\u202egpj.mha\t", files, "scangpj.mha"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := renderTitle(tt.tmpl, tt.key, tt.files, nil, false); err != nil || got != tt.want {
				t.Errorf("renderTitle(%q, %q) = %q, %v; want %q", tt.tmpl, tt.key, got, err, tt.want)
			}
		})
	}
	t.Run("too long keeps the hash", func(t *testing.T) {
		key := strings.Repeat("ü/", 200) + "ct.mha"
		got, _ := renderTitle("", key, files, nil, false)
		if len(got) > maxTitle || !utf8.ValidString(got) || !strings.HasSuffix(got, "ct.mha ["+hash+"]") {
			t.Errorf("title = %q (%d bytes); want ≤ %d valid bytes ending in the name and hash", got, len(got), maxTitle)
		}
	})
	t.Run("hash follows content and paths", func(t *testing.T) {
		a := titleHash([]state.File{{Rel: "x", SHA256: "1"}, {Rel: "y", SHA256: "2"}})
		b := titleHash([]state.File{{Rel: "y", SHA256: "2"}, {Rel: "x", SHA256: "1"}})
		c := titleHash([]state.File{{Rel: "x", SHA256: "1"}, {Rel: "y", SHA256: "3"}})
		if a != b || a == c || len(a) != 12 {
			t.Errorf("hashes %s %s %s; want order-independent, content-dependent, 12 hex", a, b, c)
		}
	})
}

// A de-identified image's title carries no folder or file name: exports
// name both after the patient.
func TestRenderTitleDeidentified(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	key := "dicom:DOE^JOHN PID-4711/1.2.3/1.2.3.4/1.2.840.10008.5.1.4.1.1.2"
	files := []state.File{{Rel: "DOE^JOHN PID-4711/IM0001", SHA256: "aa"}}
	got, err := renderTitle("", key, files, secret, true)
	if err != nil {
		t.Fatal(err)
	}
	if want := seriesTitleHash(key, secret); got != want {
		t.Errorf("default title %q; want the keyed hash %q alone", got, want)
	}
	for _, tmpl := range []string{DefaultTitle, "{name} {hash}", "study {path}"} {
		got, err := renderTitle(tmpl, key, files, secret, true)
		var ie *inputError
		if !errors.As(err, &ie) || got != "" {
			t.Errorf("renderTitle(%q) = %q, %v; want an input error and no title", tmpl, got, err)
		}
	}
	got, err = renderTitle("CT {hash}", key, files, secret, true)
	if err != nil || got != "CT "+seriesTitleHash(key, secret) {
		t.Errorf("fixed text with the hash: %q, %v", got, err)
	}
}
