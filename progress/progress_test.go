package progress

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gcingest/gcingest/printable/printabletest"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestLines(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	d := New(&bytes.Buffer{}, c.now)
	d.FitTo(func() int { return 200 })
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

// screen is a terminal of fixed width for the test: it wraps at the last
// column, scrolls, and follows the few control sequences the display
// writes (cursor up, carriage return, clear to the end of the screen).
type screen struct {
	width    int
	rows     [][]rune
	row, col int
}

func (s *screen) Write(p []byte) (int, error) {
	r := []rune(string(p))
	for i := 0; i < len(r); i++ {
		switch c := r[i]; {
		case c == '\x1b':
			j := i + 2 // ESC [ digits letter
			for j < len(r) && r[j] >= '0' && r[j] <= '9' {
				j++
			}
			n := 1
			if j > i+2 {
				fmt.Sscan(string(r[i+2:j]), &n)
			}
			switch r[j] {
			case 'A':
				s.row = max(0, s.row-n)
			case 'J':
				s.rows = s.rows[:min(len(s.rows), s.row+1)]
				if s.row < len(s.rows) {
					s.rows[s.row] = s.rows[s.row][:min(len(s.rows[s.row]), s.col)]
				}
			}
			i = j
		case c == '\r':
			s.col = 0
		case c == '\n':
			s.row, s.col = s.row+1, 0
		default:
			if s.col == s.width { // autowrap
				s.row, s.col = s.row+1, 0
			}
			for len(s.rows) <= s.row {
				s.rows = append(s.rows, nil)
			}
			for len(s.rows[s.row]) < s.col {
				s.rows[s.row] = append(s.rows[s.row], ' ')
			}
			if s.col < len(s.rows[s.row]) {
				s.rows[s.row][s.col] = c
			} else {
				s.rows[s.row] = append(s.rows[s.row], c)
			}
			s.col++
		}
	}
	return len(p), nil
}

func (s *screen) text() []string {
	out := make([]string, len(s.rows))
	for i, r := range s.rows {
		out[i] = strings.TrimRight(string(r), " ")
	}
	return out
}

// TestEightyColumns: at 80 columns (scanner consoles, KVM sessions) with
// long names and big figures, no line wraps, redraws between log lines
// leave no stale frame behind, and after Run ends the display is gone and
// stays gone while the agent logs its way out.
func TestEightyColumns(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	scr := &screen{width: 80}
	d := New(scr, c.now)
	d.FitTo(func() int { return 80 })
	const gib = 1 << 30
	names := []string{"PACS-EXPORT/2026-11-30/DOE^JOHN/series-0007-very-long-description/IM000123.mha", "ct.mha", "scans/series-7"}
	for i, n := range names {
		d.Update(uint64(i+1), n, 0, int64(i+1)*123*gib)
	}
	// Each log line clears the frame, writes, and draws the frame again,
	// as Run's ticks do.
	for step := range 20 {
		c.t = c.t.Add(3 * time.Second)
		for i, n := range names {
			d.Update(uint64(i+1), n, int64(step+1)*int64(i+1)*3*gib, int64(i+1)*123*gib)
		}
		fmt.Fprintf(d, "time=12:00:%02d level=INFO msg=\"part sent\" n=%d\n", step, step)
	}
	lines := scr.text()
	frame := d.Lines()
	for i, l := range lines {
		if n := utf8.RuneCountInString(l); n >= 80 {
			t.Errorf("row %d is %d columns wide at 80: %q", i, n, l)
		}
	}
	// Below the last log line: exactly the frame now, nothing stale.
	last := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "time=") {
			last = i
		}
	}
	if got := lines[last+1:]; strings.Join(got, "\n") != strings.Join(frame, "\n") {
		t.Errorf("below the log: %q\nwant the frame %q", got, frame)
	}
	if logs := strings.Count(strings.Join(lines, "\n"), "time="); logs != 20 {
		t.Errorf("%d log lines on the screen; want all 20", logs)
	}
	// Run returns once ctx is done, clearing the frame for good.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d.Run(ctx, time.Millisecond)
	fmt.Fprintf(d, "time=12:01:00 level=INFO msg=stopped\n")
	lines = scr.text()
	if lines[len(lines)-1] != "time=12:01:00 level=INFO msg=stopped" {
		t.Errorf("after Run ended the screen ends with %q; want the last log line, no frame", lines[len(lines)-1])
	}
}

// A window made narrower after a frame was drawn wraps its lines: the
// clear goes up by the rows they take now.
func TestNarrowerWindowClearsWrappedRows(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	var buf bytes.Buffer
	width := 120
	d := New(&buf, c.now)
	d.FitTo(func() int { return width })
	d.Update(1, "ct.mha", 0, 100<<20)
	c.t = c.t.Add(time.Second)
	d.Update(1, "ct.mha", 10<<20, 100<<20)
	fmt.Fprintf(d, "log\n")
	drawn := d.Lines()
	width = 40
	buf.Reset()
	fmt.Fprintf(d, "log\n")
	rows := 0
	for _, l := range drawn {
		rows += (utf8.RuneCountInString(l) + 39) / 40
	}
	if want := fmt.Sprintf("\x1b[%dA", rows); !strings.HasPrefix(buf.String(), want) {
		t.Errorf("clear after the window narrowed: %q; want it to start %q (%d rows at 40 columns)", buf.String(), want, rows)
	}
}

// Away from a terminal the width is unknown (0), which the display takes
// as 80 columns.
func TestTerminalWidthOfAFile(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "not-a-tty")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := TerminalWidth(f)(); got != 0 {
		t.Errorf("TerminalWidth(a file) = %d; want 0", got)
	}
}
