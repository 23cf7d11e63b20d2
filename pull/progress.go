package pull

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gcingest/gcingest/bytesize"
)

// progress reports a pull to a writer: on a terminal a bar redrawn a few
// times a second, otherwise one line per downloaded or failed file. A nil
// *progress reports nothing.
type progress struct {
	w     io.Writer
	term  bool
	total int
	began time.Time

	mu sync.Mutex // serialises writes to w

	done  atomic.Int64 // downloaded, skipped or failed
	bytes atomic.Int64

	stopc chan struct{}
	wg    sync.WaitGroup
}

// redrawEvery is how often the terminal bar is redrawn.
const redrawEvery = 200 * time.Millisecond

// newProgress returns nil when w is nil.
func newProgress(w io.Writer, total int) *progress {
	if w == nil {
		return nil
	}
	return &progress{w: w, term: isTerminal(w), total: total, began: time.Now()}
}

// isTerminal reports whether w is a character device such as a terminal.
// (It also says yes for /dev/null, where a bar does no harm.)
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// start begins redrawing the bar on a terminal; stop ends it.
func (p *progress) start() {
	if p == nil || !p.term {
		return
	}
	p.stopc = make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(redrawEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.draw()
			case <-p.stopc:
				return
			}
		}
	}()
}

// stop ends the bar and writes a summary line.
func (p *progress) stop(finished bool) {
	if p == nil {
		return
	}
	if p.stopc != nil {
		close(p.stopc)
		p.wg.Wait()
		p.draw()
		p.line("")
	}
	word := "done"
	if !finished {
		word = "interrupted"
	}
	p.line(fmt.Sprintf("%s: %d/%d files, %s downloaded", word, p.done.Load(), p.total, bytesize.Format(p.bytes.Load())))
}

func (p *progress) addBytes(n int64) {
	if p != nil {
		p.bytes.Add(n)
	}
}

func (p *progress) skipped() {
	if p != nil {
		p.done.Add(1)
	}
}

func (p *progress) downloaded(rel string, n int64) {
	if p == nil {
		return
	}
	d := p.done.Add(1)
	if !p.term {
		p.line(fmt.Sprintf("[%d/%d] downloaded %s (%s)", d, p.total, rel, bytesize.Format(n)))
	}
}

func (p *progress) failed(rel string, err error) {
	if p == nil {
		return
	}
	d := p.done.Add(1)
	if p.term {
		// Keep the failure visible above the bar.
		p.mu.Lock()
		fmt.Fprintf(p.w, "\r\x1b[Kfailed %s: %v\n", rel, err)
		p.mu.Unlock()
		return
	}
	p.line(fmt.Sprintf("[%d/%d] failed %s: %v", d, p.total, rel, err))
}

func (p *progress) line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.w, s)
}

func (p *progress) draw() {
	elapsed := time.Since(p.began)
	s := renderBar(int(p.done.Load()), p.total, p.bytes.Load(), elapsed)
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprint(p.w, "\r"+s+"\x1b[K")
}

// barWidth is the number of cells of the bar.
const barWidth = 24

// renderBar draws "[#####.....] 12/50 files  3.4 MiB  1.1 MiB/s". The
// server gives no file sizes, so the bar counts files, not bytes.
func renderBar(done, total int, bytes int64, elapsed time.Duration) string {
	filled := barWidth
	if total > 0 {
		filled = min(done*barWidth/total, barWidth)
	}
	rate := ""
	if secs := elapsed.Seconds(); secs > 0 {
		rate = "  " + bytesize.Format(int64(float64(bytes)/secs)) + "/s"
	}
	return fmt.Sprintf("[%s%s] %d/%d files  %s%s",
		strings.Repeat("#", filled), strings.Repeat(".", barWidth-filled), done, total, bytesize.Format(bytes), rate)
}
