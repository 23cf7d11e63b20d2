package main

// End-to-end test of the live display: the real binary at a
// pseudo-terminal (Linux: /dev/ptmx) of a scanner console's width.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

// openPTY opens a pseudo-terminal of cols columns: the master end, which
// reads what is written to the terminal, and the terminal itself.
func openPTY(t *testing.T, cols uint16) (master, tty *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock the pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pseudo-terminal number: %v", err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(int(tty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: cols}); err != nil {
		t.Fatalf("set the terminal's width: %v", err)
	}
	return master, tty
}

// TestE2EDICOMLiveDisplay: `gcingest run` at a terminal of 80 columns
// shows a series storescu sends as it comes in, on a line of its own that
// fits the terminal, above the log lines' scrolling.
func TestE2EDICOMLiveDisplay(t *testing.T) {
	needStorescu(t)
	e := newE2E(t, gcapitest.Options{}, "")
	dicomAddr := freeAddr(t)
	e.writeDICOMConfig("", "3s", "", e.dicomTable(dicomAddr, ""))
	const n = 100
	files := writeCTSeries(t, "16", n, 2048)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	master, tty := openPTY(t, 80)
	defer master.Close()
	e.started = e.logLen()
	agent := exec.Command(gcingestBinary(t), "run", "--config", e.config)
	agent.Stdout, agent.Stderr = tty, tty
	agent.Env = append(os.Environ(), "GRAND_CHALLENGE_TOKEN=")
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close() // the agent's now: reads of master end when it exits
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		io.Copy(&lockedWriter{mu: &e.logsMu, buf: e.logs}, master)
	}()
	waitFor(t, 30*time.Second, "the agent to be up", func() bool { return strings.Contains(e.logSince(e.started), "agent up") }, e.logTail)

	if out, err := storescu(ctx, dicomAddr, "CT1", files).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	// What the terminal shows, line by line, without the display's own
	// cursor moves and the terminal's carriage returns.
	own := regexp.MustCompile(`\x1b\[[0-9]*[AJ]`)
	screenLines := func() []string {
		return strings.Split(own.ReplaceAllString(strings.ReplaceAll(e.logSince(e.started), "\r", ""), ""), "\n")
	}
	received := regexp.MustCompile(`^received from CT1 +100 instances  [0-9.]+ KiB`)
	waitFor(t, 10*time.Second, "the display to show the series received", func() bool {
		for _, l := range screenLines() {
			if received.MatchString(l) {
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("%q", e.logTail()) })
	e.stop(agent)
	<-copied

	// The display's lines (a log line is the terminal's to wrap).
	drawn := regexp.MustCompile(`^(receiving from |received from |  |uploading )`)
	for _, l := range screenLines() {
		if !drawn.MatchString(l) {
			continue
		}
		if n := utf8.RuneCountInString(l); n >= 80 {
			t.Errorf("the display drew a line of %d columns at 80: %q", n, l)
		}
	}
}
