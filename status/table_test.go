package status

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestCause(t *testing.T) {
	tests := map[string]string{
		"attach item 0c5b: PATCH https://gc.example/api/v1/archives/items/0c5b/: 400 Bad Request: archive: Invalid hyperlink - Object does not exist.": "archive: Invalid hyperlink - Object does not exist. (400 Bad Request)",
		"upload ct.mha part 3: PUT https://s3.example/x: 503 Service Unavailable":                                                                      "503 Service Unavailable",
		"import failed:\n  not a valid image": "not a valid image",
		"no colon here":                       "no colon here",
	}
	for in, want := range tests {
		if got := Cause(in); got != want {
			t.Errorf("Cause(%q)\n got  %q\n want %q", in, got, want)
		}
	}
}

func TestWriteTableNeverCutsAnError(t *testing.T) {
	long := "attach item 0c5b: PATCH https://gc.example/api/v1/archives/items/0c5b/: 400 Bad Request: values: " + strings.Repeat("an interface refused the value; ", 8) + "END"
	rep := &Report{Images: []Image{{ID: "7", Key: "case7", State: StateFailed, LastError: long}},
		Counts: map[string]int{StateFailed: 1, StateFinished: 41}}
	var buf bytes.Buffer
	if err := rep.WriteTable(&buf, t0); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	cause := strings.Index(got, "  7  values: an interface refused")
	whole := strings.Index(got, "attach item 0c5b: PATCH")
	if cause < 0 || whole < cause || !strings.Contains(got, "END\n") {
		t.Errorf("want the cause first, then the whole error uncut:\n%s", got)
	}
	for _, want := range []string{"42 images: finished 41, failed 1", "shown: 1 in progress or failed; --all shows every image"} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}

func TestWriteDetail(t *testing.T) {
	at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.Local)
	rep := &Report{Query: Query{ID: "7"}, Images: []Image{{ID: "7", Watch: "/data/in", Key: "case7", State: StateFailed, ItemPK: "0c5b",
		Detail: &Detail{Kind: "folder",
			Files:   []DetailFile{{Rel: "case7/ct.mha", Path: "/data/in/case7/ct.mha", Size: 3 << 20}},
			Uploads: []DetailUpload{{Filename: "ct.mha", Size: 3 << 20, Sent: 3 << 20, PK: "u1", Completed: true}},
			Values:  []DetailValue{{Interface: "ct-image", Kind: "image", Files: []string{"case7/ct.mha"}}},
			Errors: []ErrorNote{
				{At: at, State: StateUploading, Msg: "upload ct.mha part 1: PUT https://s3/x: 503 Service Unavailable"},
				{At: at.Add(time.Minute), State: StateAttaching, Msg: "attach: PATCH https://gc/x: 400 Bad Request: archive: Invalid hyperlink - Object does not exist."},
			}}}}}
	var buf bytes.Buffer
	if err := rep.WriteDetail(&buf, t0); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	for _, want := range []string{"state     failed\n", "/data/in/case7/ct.mha  3.0 MiB", "ct.mha  completed, 3.0 MiB  u1",
		"ct-image (image) case7/ct.mha  not yet on the item",
		"2026-03-01 09:00:00  uploading  503 Service Unavailable\n",
		"2026-03-01 09:01:00  attaching  archive: Invalid hyperlink - Object does not exist. (400 Bad Request)\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("detail lacks %q:\n%s", want, got)
		}
	}
}

func TestQueryRoundTrip(t *testing.T) {
	for _, q := range []Query{{}, {All: true}, {States: []string{StateFailed, StateRetrying}}, {ID: "12"}} {
		got, err := ParseQuery(q.Values())
		if err != nil {
			t.Fatal(err)
		}
		if got.All != q.All || got.ID != q.ID || strings.Join(got.States, ",") != strings.Join(q.States, ",") {
			t.Errorf("ParseQuery(%v) = %+v, want %+v", q.Values(), got, q)
		}
	}
	if _, err := ParseQuery(url.Values{"state": {"failde"}}); err == nil {
		t.Error("an unknown state was accepted")
	}
}

// countingSource counts without a report: /metrics must not ask for one.
type countingSource struct{ reports int }

func (c *countingSource) Report(ctx context.Context, q Query) (*Report, error) {
	c.reports++
	return &Report{}, nil
}

func (c *countingSource) Counts(ctx context.Context) (map[string]int, map[string]int, error) {
	return map[string]int{StateFinished: 1000, StateFailed: 2}, map[string]int{"/data/in": 3}, nil
}

func TestMetricsFromCounts(t *testing.T) {
	src := &countingSource{}
	srv := httptest.NewServer(Handler(src, NewMetrics(), discard()))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	got := string(b)
	for _, want := range []string{`gcingest_images{state="finished"} 1000`, `gcingest_images{state="failed"} 2`, `gcingest_unknown_files{watch="/data/in"} 3`} {
		if !strings.Contains(got, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, got)
		}
	}
	if src.reports != 0 {
		t.Errorf("/metrics asked for %d reports; it must use the counts alone", src.reports)
	}
}

// A file of many GiB is read for minutes before anything is sent: status
// says so, rather than "0 %" of an upload that has not begun.
func TestWriteTableShowsHashing(t *testing.T) {
	rep := &Report{Images: []Image{{ID: "3", Key: "big.mha", State: StatePending, Files: []string{"big.mha"},
		BytesSent: 34 << 30, BytesTotal: 100 << 30, Hashing: true}}, Counts: map[string]int{StatePending: 1}}
	var buf bytes.Buffer
	if err := rep.WriteTable(&buf, t0); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); !strings.Contains(got, "hashing 34% of 100.0 GiB") {
		t.Errorf("table does not show the hash's progress:\n%s", got)
	}
}
