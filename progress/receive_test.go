package progress

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gcingest/gcingest/status"
)

// listeners are DICOM listeners' counters a test changes between polls,
// as a running agent's grow.
type listeners []status.Listener

func (ls *listeners) report() []status.Listener {
	out := make([]status.Listener, len(*ls))
	for i, l := range *ls {
		out[i] = l
		out[i].Callers = map[string]status.ListenerCounts{}
		for ae, c := range l.Callers {
			out[i].Callers[ae] = c
		}
	}
	return out
}

// set sets the counters of caller ae at listener i.
func (ls listeners) set(i int, ae string, c status.ListenerCounts) { ls[i].Callers[ae] = c }

func TestReceivingLines(t *testing.T) {
	const mib = 1 << 20
	c := &clock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	d := New(&bytes.Buffer{}, c.now)
	d.FitTo(func() int { return 200 })
	ls := listeners{{AETitle: "GCINGEST", Callers: map[string]status.ListenerCounts{}}}
	d.ReceiveFrom(ls.report)
	step := func(dt time.Duration) []string {
		c.t = c.t.Add(dt)
		d.poll()
		return d.Lines()
	}
	check := func(t *testing.T, got []string, want ...string) {
		t.Helper()
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}

	// A refused caller: nothing is being received.
	ls.set(0, "INTRUDER", status.ListenerCounts{Refused: 1})
	check(t, step(0))

	t.Run("an open association is a line", func(t *testing.T) {
		ls.set(0, "CT1", status.ListenerCounts{Current: 1, Total: 1, Instances: 10, Bytes: 10 * mib})
		check(t, step(time.Second),
			"receiving from CT1                         1 association  10 instances  10.0 MiB  10.0 MiB/s")
		ls.set(0, "CT1", status.ListenerCounts{Current: 1, Total: 1, Instances: 110, Bytes: 60 * mib})
		ls.set(0, "PACS", status.ListenerCounts{Current: 2, Total: 2, Instances: 5, Bytes: 2 * mib})
		check(t, step(3*time.Second),
			"receiving from CT1                         1 association  110 instances  60.0 MiB  15.0 MiB/s",
			"receiving from PACS                        2 associations  5 instances  2.0 MiB  682.7 KiB/s")
	})
	t.Run("a sender done stays a while as received", func(t *testing.T) {
		ls.set(0, "CT1", status.ListenerCounts{Total: 1, Instances: 110, Bytes: 60 * mib})
		check(t, step(time.Second),
			"received from CT1                          110 instances  60.0 MiB  15.0 MiB/s",
			"receiving from PACS                        2 associations  5 instances  2.0 MiB  512.0 KiB/s")
		ls.set(0, "PACS", status.ListenerCounts{Total: 2, Instances: 5, Bytes: 2 * mib})
		check(t, step(time.Second),
			"received from CT1                          110 instances  60.0 MiB  15.0 MiB/s",
			"received from PACS                         5 instances  2.0 MiB  512.0 KiB/s")
		// Gone after linger, without a poll: a redraw between log lines
		// drops them too.
		c.t = c.t.Add(linger + time.Second)
		check(t, d.Lines())
		check(t, step(0))
	})
	t.Run("the next burst counts from where the last ended", func(t *testing.T) {
		ls.set(0, "CT1", status.ListenerCounts{Current: 1, Total: 2, Instances: 111, Bytes: 61 * mib})
		check(t, step(time.Second),
			"receiving from CT1                         1 association  1 instance  1.0 MiB  1.0 MiB/s")
	})
	t.Run("with several listeners a line names the called AE title", func(t *testing.T) {
		ls = append(ls, status.Listener{AETitle: "GCINGEST-TLS", Callers: map[string]status.ListenerCounts{}})
		ls.set(1, "CT1", status.ListenerCounts{Current: 1, Total: 1, Instances: 4, Bytes: 4 * mib})
		check(t, step(time.Second),
			"receiving from CT1 to GCINGEST             1 association  1 instance  1.0 MiB  512.0 KiB/s",
			"receiving from CT1 to GCINGEST-TLS         1 association  4 instances  4.0 MiB  4.0 MiB/s")
	})
	t.Run("a calling AE title is escaped", func(t *testing.T) {
		ls.set(0, "EVIL\x1b[2J", status.ListenerCounts{Current: 1, Total: 1})
		got := step(time.Second)
		if s := strings.Join(got, "\n"); strings.ContainsRune(s, '\x1b') || !strings.Contains(s, `receiving from EVIL\x1b[2J to GCINGEST`) {
			t.Errorf("got\n%q\nwant the calling AE title escaped", s)
		}
	})
}

// TestEightyColumnsWithReceiving: at 80 columns, callers with the longest
// AE titles at two listeners, more of them than are drawn, above uploads:
// no line wraps, the screen below the last log line is the frame now,
// and a caller's line that went away leaves nothing behind.
func TestEightyColumnsWithReceiving(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	scr := &screen{width: 80}
	d := New(scr, c.now)
	d.FitTo(func() int { return 80 })
	ls := listeners{
		{AETitle: "GCINGEST-STORAGE", Callers: map[string]status.ListenerCounts{}},
		{AETitle: "GCINGEST-TLS-NODE", Callers: map[string]status.ListenerCounts{}},
	}
	d.ReceiveFrom(ls.report)
	d.poll()
	const gib = 1 << 30
	callers := []string{"RADIOLOGY-PACS01", "CT-SCANNER-ROOM2", "MR", "US-PORTABLE-0007", "PET-CT-NUCLEAR-1"}
	d.Update(1, "PACS-EXPORT/2026-11-30/DOE^JOHN/series-0007-very-long-description/IM000123.mha", 0, 123*gib)
	check := func(t *testing.T, wantFrame int) {
		t.Helper()
		lines := scr.text()
		for i, l := range lines {
			if n := utf8.RuneCountInString(l); n >= 80 {
				t.Errorf("row %d is %d columns wide at 80: %q", i, n, l)
			}
		}
		last := -1
		for i, l := range lines {
			if strings.HasPrefix(l, "time=") {
				last = i
			}
		}
		frame := d.Lines()
		if got := lines[last+1:]; strings.Join(got, "\n") != strings.Join(frame, "\n") {
			t.Errorf("below the log: %q\nwant the frame %q", got, frame)
		}
		if len(frame) != wantFrame {
			t.Errorf("the frame has %d lines, want %d:\n%s", len(frame), wantFrame, strings.Join(frame, "\n"))
		}
	}
	for step := range 10 {
		c.t = c.t.Add(3 * time.Second)
		for i, ae := range callers {
			n := int64((step + 1) * (i + 1) * 100)
			ls.set(i%2, ae, status.ListenerCounts{Current: 16, Total: 16, Instances: n, Bytes: n * 97 << 20})
		}
		d.Update(1, "PACS-EXPORT/2026-11-30/DOE^JOHN/series-0007-very-long-description/IM000123.mha", int64(step+1)*3*gib, 123*gib)
		d.poll()
		fmt.Fprintf(d, "time=12:00:%02d level=INFO msg=\"part sent\" n=%d\n", step, step)
	}
	// Four callers, "1 more", the image and the totals.
	check(t, 4+1+2)

	// Every caller done: received lines for a while, then nothing.
	for i, ae := range callers {
		st := ls[i%2].Callers[ae]
		st.Current = 0
		ls.set(i%2, ae, st)
	}
	c.t = c.t.Add(time.Second)
	d.poll()
	fmt.Fprintf(d, "time=12:01:00 level=INFO msg=\"association released\"\n")
	check(t, 4+1+2)
	if got := d.Lines()[0]; !strings.HasPrefix(got, "received from MR to GCINGEST-STORAGE ") {
		t.Errorf("first line %q; want the first caller received", got)
	}
	c.t = c.t.Add(linger + time.Second)
	d.poll()
	fmt.Fprintf(d, "time=12:01:10 level=INFO msg=\"series ready\"\n")
	check(t, 2)
}
