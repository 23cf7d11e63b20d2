package dimse

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestLowPriority: what the journal's background writer hands to
// lowPriority runs on a thread of nice lowNice, and the caller's own
// thread keeps its priority.
func TestLowPriority(t *testing.T) {
	nice := func() int {
		b, err := os.ReadFile("/proc/thread-self/stat")
		if err != nil {
			t.Fatal(err)
		}
		// Field 19 is the nice value; the command name (field 2) may hold
		// spaces, so count from the ')' that ends it.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		n, err := strconv.Atoi(f[16])
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	l := startLowPriority()
	defer l.stop()
	var got int
	for range 3 {
		l.do(func() { got = nice() })
		if got != lowNice {
			t.Errorf("nice %d on the low-priority thread, want %d", got, lowNice)
		}
	}
	if n := nice(); n == lowNice {
		t.Errorf("the caller's thread got nice %d too", n)
	}
}
