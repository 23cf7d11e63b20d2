package progress

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/printable/printabletest"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestLines(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	d := New(&bytes.Buffer{}, c.now)
	const mib = 1 << 20
	d.Update(1, "ct-0001.mha", 0, 100*mib)
	d.Update(2, "scans/series-7", 50*mib, 100*mib) // resumed: half was sent by an earlier run
	c.t = c.t.Add(10 * time.Second)
	d.Update(1, "ct-0001.mha", 40*mib, 100*mib)
	d.Update(2, "scans/series-7", 70*mib, 100*mib)
	got := strings.Join(d.Lines(), "\n")
	want := strings.Join([]string{
		"  ct-0001.mha                              40.0 MiB / 100.0 MiB  40%  4.0 MiB/s  15s left",
		"  scans/series-7                           70.0 MiB / 100.0 MiB  70%  2.0 MiB/s  15s left",
		"uploading 2 images: 110.0 MiB / 200.0 MiB  55%  6.0 MiB/s  15s left",
	}, "\n")
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}

	t.Run("a finished upload leaves the display", func(t *testing.T) {
		d.Update(1, "ct-0001.mha", 100*mib, 100*mib)
		if got := d.Lines(); len(got) != 2 || !strings.Contains(got[0], "series-7") {
			t.Errorf("got %q", got)
		}
	})
	t.Run("an image without progress for a minute leaves the display", func(t *testing.T) {
		c.t = c.t.Add(2 * time.Minute)
		if got := d.Lines(); len(got) != 0 {
			t.Errorf("got %q", got)
		}
	})
}

func TestLogLinesScrollAboveTheDisplay(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	var out bytes.Buffer
	d := New(&out, c.now)
	d.Write([]byte("first log line\n"))
	d.Update(1, "a.mha", 10, 100)
	d.Write([]byte("second log line\n"))
	d.Write([]byte("third log line\n"))
	got := out.String()
	want := "first log line\n" +
		"second log line\n" +
		"  a.mha                                    10 B / 100 B  10%  -- MiB/s\nuploading 1 image: 10 B / 100 B  10%  -- MiB/s\n" +
		"\x1b[2A\r\x1b[J" + "third log line\n" +
		"  a.mha                                    10 B / 100 B  10%  -- MiB/s\nuploading 1 image: 10 B / 100 B  10%  -- MiB/s\n"
	if got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
}

// The display draws file names from the drop folder: none reaches the
// terminal raw, between the display's own cursor moves.
func TestHostileNamesAreEscaped(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	var out bytes.Buffer
	d := New(&out, c.now)
	for i, n := range printabletest.Names {
		d.Update(uint64(i+1), n, 10, 100)
	}
	d.Write([]byte("a log line\n"))
	d.Write([]byte("another log line\n")) // clears what the first drew
	own := regexp.MustCompile(`\x1b\[[0-9]+A\r\x1b\[J`)
	if n := len(own.FindAllString(out.String(), -1)); n != 1 {
		t.Errorf("the display cleared itself %d times, want 1:\n%q", n, out.String())
	}
	drawn := own.ReplaceAllString(out.String(), "")
	if raw := printabletest.Raw(drawn); raw != "" {
		t.Errorf("the display wrote %s:\n%q", raw, drawn)
	}
	for _, want := range printabletest.Escaped {
		if !strings.Contains(drawn, want) {
			t.Errorf("the display lacks %s:\n%s", want, drawn)
		}
	}
	if got, want := len(d.Lines()), len(printabletest.Names)+1; got != want {
		t.Errorf("the display draws %d lines, want %d, one per image and the totals:\n%s", got, want, strings.Join(d.Lines(), "\n"))
	}
}
