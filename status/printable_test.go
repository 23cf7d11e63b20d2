package status

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gcingest/gcingest/printable/printabletest"
)

// hostileReport has one failed image per hostile name, the name in every
// field that holds one, and the whole story of the first image.
func hostileReport() *Report {
	rep := &Report{Version: "v1", Started: t0}
	d := &Detail{Kind: "single", MovedTo: "/failed/" + printabletest.Names[0], Created: t0}
	for i, n := range printabletest.Names {
		rep.Images = append(rep.Images, Image{ID: strconv.Itoa(i + 1), Watch: "/drop/" + n, Key: n, Title: n + " [3f9a1c2b7e4d]",
			State: StateFailed, Files: []string{n}, ItemPK: n, Attempts: 1,
			LastError: "hash: cannot read /drop/" + n + ": permission denied"})
		d.Files = append(d.Files, DetailFile{Rel: n, Path: "/drop/" + n, Size: 10})
		d.Uploads = append(d.Uploads, DetailUpload{Filename: n, Size: 10, PK: n})
		d.Values = append(d.Values, DetailValue{Interface: "ct-image", Kind: "image", Files: []string{n, n}})
		d.Errors = append(d.Errors, ErrorNote{At: t0, State: StateFailed, Msg: "move " + n + " to failed_dir: file exists"})
	}
	rep.Images[0].Detail = d
	rep.CountStates()
	return rep
}

// checkPrintable fails when out holds a raw control or bidi character, or
// lacks one of the names' escaped forms (the reader must still tell which
// file is meant).
func checkPrintable(t *testing.T, what, out string, want []string) {
	t.Helper()
	if raw := printabletest.Raw(out); raw != "" {
		t.Errorf("%s holds %s:\n%q", what, raw, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %s:\n%s", what, w, out)
		}
	}
}

func TestTableAndDetailEscapeNames(t *testing.T) {
	rep := hostileReport()
	var buf bytes.Buffer
	if err := rep.WriteTable(&buf, t0); err != nil {
		t.Fatal(err)
	}
	checkPrintable(t, "WriteTable", buf.String(), printabletest.Escaped)
	if got, want := strings.Count(buf.String(), "\n"), 5+3*len(printabletest.Names); got != want {
		t.Errorf("WriteTable wrote %d lines, want %d (header, a row and two error lines per image, the errors heading, counts, two blank lines):\n%s", got, want, buf.String())
	}

	buf.Reset()
	if err := rep.WriteDetail(&buf, t0); err != nil {
		t.Fatal(err)
	}
	checkPrintable(t, "WriteDetail", buf.String(), printabletest.Escaped)
}

// hostileSource serves hostileReport and refuses every retry with an
// error per image that quotes its name, as ingest.Retry does.
type hostileSource struct{}

func (hostileSource) Report(context.Context, Query) (*Report, error) { return hostileReport(), nil }

func (hostileSource) Retry(ctx context.Context, ids []string, failed bool) ([]string, error) {
	var errs []error
	for _, n := range printabletest.Names {
		errs = append(errs, fmt.Errorf("retry image 1: move /failed/%s back: file exists", n))
	}
	return nil, errors.Join(errs...)
}

// Through the real listener and client, as `gcingest status` and `gcingest
// retry` see a running agent.
func TestServedNamesAreEscaped(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, hostileSource{}, NewMetrics(), discard()) }()
	defer func() {
		cancel()
		<-done
	}()

	// JSON carries valid UTF-8 only: the agent escapes a name that is not
	// (ingest.EscapedNames); here such a name arrives with U+FFFD.
	var want []string
	for i, n := range printabletest.Names {
		if utf8.ValidString(n) {
			want = append(want, printabletest.Escaped[i])
		}
	}
	rep, err := Fetch(context.Background(), addr, Query{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := rep.WriteTable(&buf, t0); err != nil {
		t.Fatal(err)
	}
	checkPrintable(t, "table from the agent", buf.String(), want)

	rep, err = Fetch(context.Background(), addr, Query{ID: "1"})
	if err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	if err := rep.WriteDetail(&buf, t0); err != nil {
		t.Fatal(err)
	}
	checkPrintable(t, "detail from the agent", buf.String(), want)

	_, err = PostRetry(context.Background(), addr, RetryRequest{Failed: true})
	if err == nil {
		t.Fatal("retry succeeded; want the source's errors")
	}
	checkPrintable(t, "retry error", err.Error(), printabletest.Escaped)
	if got, want := strings.Count(err.Error(), "\n"), len(printabletest.Names)-1; got != want {
		t.Errorf("retry error has %d line breaks, want %d, one between the errors of two images:\n%s", got, want, err)
	}
}
