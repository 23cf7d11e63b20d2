// Package progress draws what `gcingest run` is receiving and uploading at
// a terminal: a line per calling AE title sending DICOM to a listener now
// (instances, bytes, rate), one line per image being uploaded (bytes,
// rate, time left) and a line of totals, kept below the log lines, which
// scroll above it. Away from a terminal nothing is drawn; the log lines
// alone tell the story.
package progress

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gcingest/gcingest/printable"
	"github.com/gcingest/gcingest/status"
)

// stale is how long an image may go without progress before its line is
// dropped: it left the upload step (a retry wait, a failure) without
// sending its last byte.
const stale = time.Minute

// maxLines caps the image lines drawn; the totals line counts the rest.
const maxLines = 8

// Display keeps the uploads in flight and draws them. Safe for concurrent
// use: Update is called from the pipeline's workers, Write from the logger.
type Display struct {
	mu     sync.Mutex
	w      io.Writer
	now    func() time.Time
	width  func() int // the terminal's columns now; 0: unknown
	images map[uint64]*entry
	drawn  []int // the width of each line on the screen below the last log line
	closed bool  // Run has ended: nothing is drawn again

	// listeners reports the DICOM listeners' counters (ReceiveFrom);
	// Run's goroutine alone calls it.
	listeners func() []status.Listener
	incoming  incoming
}

// defaultWidth is assumed when the terminal does not say: scanner consoles
// and KVM sessions often have 80 columns.
const defaultWidth = 80

type entry struct {
	key         string
	sent, total int64
	start       time.Time // first report in this process
	sent0       int64     // bytes sent before start (an earlier run, parts resumed)
	last        time.Time
}

// New returns a display that draws on w (a terminal). now is the clock;
// nil means time.Now.
func New(w io.Writer, now func() time.Time) *Display {
	if now == nil {
		now = time.Now
	}
	return &Display{w: w, now: now, images: map[uint64]*entry{}}
}

// FitTo makes every line fit the terminal's width, which width reports
// (asked before each redraw, so a resized window is followed); 0 means
// unknown, taken as 80 columns. TerminalWidth(f) asks a terminal.
func (d *Display) FitTo(width func() int) {
	d.mu.Lock()
	d.width = width
	d.mu.Unlock()
}

// columns is the width to fit now.
func (d *Display) columns() int {
	if d.width != nil {
		if w := d.width(); w > 0 {
			return w
		}
	}
	return defaultWidth
}

// IsTerminal reports whether f is a terminal (a character device), where
// a display that redraws itself makes sense.
func IsTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Update records an image's progress: sent of total bytes of its uploads.
func (d *Display) Update(id uint64, key string, sent, total int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	e := d.images[id]
	if e == nil || sent < e.sent {
		e = &entry{key: key, start: now, sent0: sent}
		d.images[id] = e
	}
	e.sent, e.total, e.last = sent, total, now
}

// ReceiveFrom makes the display show what the DICOM listeners receive:
// listeners reports their counters now (the agent's, as `gcingest status`
// shows them), and is asked at each of Run's ticks, outside the display's
// lock, so that it may take locks of its own. nil shows nothing received.
func (d *Display) ReceiveFrom(listeners func() []status.Listener) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.listeners = listeners
}

// poll asks the listeners for their counters and notes them.
func (d *Display) poll() {
	d.mu.Lock()
	listeners := d.listeners
	d.mu.Unlock()
	if listeners == nil {
		return
	}
	ls := listeners()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.incoming.observe(ls, d.now())
}

// Write writes log output above the display: the drawn lines are cleared,
// p is written, and the lines are drawn again below it.
func (d *Display) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.clearLocked()
	n, err := d.w.Write(p)
	d.drawLocked()
	return n, err
}

// Run redraws the display every interval until ctx is done, then clears it.
func (d *Display) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// Cleared for good: log lines written while the agent stops
			// must not bring the last frame back below them.
			d.mu.Lock()
			d.clearLocked()
			d.closed = true
			d.mu.Unlock()
			return
		case <-t.C:
			d.poll()
			d.mu.Lock()
			d.clearLocked()
			d.drawLocked()
			d.mu.Unlock()
		}
	}
}

func (d *Display) clearLocked() {
	if len(d.drawn) == 0 {
		return
	}
	// Up to the first drawn line, then clear to the end of the screen. A
	// window made narrower since the lines were drawn wraps them: count
	// the rows they take at today's width, or the clear leaves a trail.
	cols, rows := d.columns(), 0
	for _, n := range d.drawn {
		rows += max(1, (n+cols-1)/cols)
	}
	fmt.Fprintf(d.w, "\x1b[%dA\r\x1b[J", rows)
	d.drawn = d.drawn[:0]
}

func (d *Display) drawLocked() {
	if d.closed {
		return
	}
	lines := d.linesLocked()
	if len(lines) == 0 {
		return
	}
	io.WriteString(d.w, strings.Join(lines, "\n")+"\n")
	for _, l := range lines {
		d.drawn = append(d.drawn, utf8.RuneCountInString(l))
	}
}

// Lines returns what the display draws now, without terminal control codes.
func (d *Display) Lines() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.linesLocked()
}

func (d *Display) linesLocked() []string {
	now := d.now()
	// One column less than the terminal's: a line that fills the last
	// column makes some terminals wrap the cursor onto a row of its own.
	fit := d.columns() - 1
	out := d.incoming.lines(now, fit)
	ids := make([]uint64, 0, len(d.images))
	for id, e := range d.images {
		if e.sent >= e.total || now.Sub(e.last) > stale {
			delete(d.images, id)
			continue
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return out
	}
	slices.Sort(ids)
	var sent, total, rate float64
	for i, id := range ids {
		e := d.images[id]
		r := e.rate(now)
		sent, total, rate = sent+float64(e.sent), total+float64(e.total), rate+r
		if i < maxLines {
			// The key is a file name from the drop folder: escaped before
			// it is cut, so the cut falls in printable text.
			out = append(out, imageLine(printable.String(e.key), float64(e.sent), float64(e.total), r, fit))
		}
	}
	head := fmt.Sprintf("uploading %d %s", len(ids), plural(len(ids), "image", "images"))
	if len(ids) > maxLines {
		head += fmt.Sprintf(" (%d not shown)", len(ids)-maxLines)
	}
	return append(out, fitLine(head+": ", figureForms(sent, total, rate), fit))
}

// minName is the fewest characters of a name a line keeps before it drops
// figures instead.
const minName = 16

// nameColumns is the widest the name column gets, indent included: where
// a line has the room, its figures start in the column after it, under
// those of the lines above.
const nameColumns = 42

// imageLine is an image's line in at most fit columns: the name shortened
// first (to minName), then the figures shortened, then the line cut.
func imageLine(name string, sent, total, rate float64, fit int) string {
	return nameLine("  ", name, figureForms(sent, total, rate), fit)
}

// nameLine is indent, name and the longest of forms that leaves the name
// minName columns, in at most fit columns: the name padded to the name
// column or shortened (to minName), then the figures shortened, then the
// line cut.
func nameLine(indent, name string, forms []string, fit int) string {
	for _, f := range forms {
		room := fit - len(indent) - 1 - utf8.RuneCountInString(f) // " " after the name
		if room >= minName || f == forms[len(forms)-1] {
			n := min(nameColumns-len(indent), max(room, minName))
			return cut(fmt.Sprintf("%s%-*s %s", indent, n, shorten(name, n), f), fit)
		}
	}
	return ""
}

// fitLine is prefix and the longest of forms that fits in fit columns, or
// the shortest cut to fit.
func fitLine(prefix string, forms []string, fit int) string {
	for _, f := range forms {
		if l := prefix + f; utf8.RuneCountInString(l) <= fit {
			return l
		}
	}
	return cut(prefix+forms[len(forms)-1], fit)
}

// cut keeps the first n characters of s.
func cut(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:max(n, 0)])
	}
	return s
}

// rate is the image's bytes per second sent in this process.
func (e *entry) rate(now time.Time) float64 {
	el := now.Sub(e.start).Seconds()
	if el < 0.5 {
		return 0
	}
	return float64(e.sent-e.sent0) / el
}

// figureForms are figures and shorter forms of it, longest first: without
// the time left, without the rate, the percentage alone.
func figureForms(sent, total, rate float64) []string {
	full := figures(sent, total, rate)
	pct := 0.0
	if total > 0 {
		pct = 100 * sent / total
	}
	forms := []string{full}
	if rate > 0 {
		forms = append(forms, fmt.Sprintf("%s / %s %3.0f%%  %s/s", size(sent), size(total), pct, size(rate)))
	}
	return append(forms, fmt.Sprintf("%s / %s %3.0f%%", size(sent), size(total), pct), fmt.Sprintf("%3.0f%%", pct))
}

// figures is "45.2 MiB / 95.0 MiB  47%  12.3 MiB/s  4s left".
func figures(sent, total, rate float64) string {
	pct := 0.0
	if total > 0 {
		pct = 100 * sent / total
	}
	s := fmt.Sprintf("%s / %s %3.0f%%", size(sent), size(total), pct)
	if rate <= 0 {
		return s + "  -- MiB/s"
	}
	left := time.Duration((total - sent) / rate * float64(time.Second))
	return s + fmt.Sprintf("  %s/s  %s left", size(rate), eta(left))
}

func size(n float64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%.0f B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", n/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", n/(1<<20))
	}
	return fmt.Sprintf("%.2f GiB", n/(1<<30))
}

func eta(d time.Duration) string {
	switch {
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return strings.TrimSuffix(d.Round(time.Second).String(), "0s")
	}
	return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
}

func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return "..." + string(r[len(r)-n+3:])
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
