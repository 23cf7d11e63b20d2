package status

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable prints the report as a table a person reads at a glance: one
// line per image, then the counts by state. now makes "next attempt"
// relative ("in 2m") and keeps the output reproducible in tests.
func (r *Report) WriteTable(w io.Writer, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tIMAGE\tFILES\tPROGRESS\tITEM\tNEXT\tLAST ERROR")
	for _, im := range r.Images {
		name := im.Title
		if name == "" {
			name = im.Key
		}
		progress := "-"
		if im.BytesTotal > 0 && (im.State == StateUploading || im.State == StatePending || im.State == StateRetrying) && im.BytesSent < im.BytesTotal {
			progress = fmt.Sprintf("%d%% of %s", im.BytesSent*100/im.BytesTotal, humanBytes(im.BytesTotal))
		} else if im.BytesTotal > 0 {
			progress = humanBytes(im.BytesTotal)
		}
		next := "-"
		if !im.NextAttempt.IsZero() {
			next = "in " + roundDur(im.NextAttempt.Sub(now))
			if !im.NextAttempt.After(now) {
				next = "now"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", shorten(im.ID, 12), im.State, shorten(name, 48),
			len(im.Files), progress, dash(im.ItemPK), next, dash(shorten(oneLine(im.LastError), 60)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var parts []string
	for _, s := range States {
		if n := r.Counts[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", s, n))
		}
	}
	total := len(r.Images)
	if len(parts) == 0 {
		parts = []string{"no images"}
	}
	_, err := fmt.Fprintf(w, "\n%d images: %s\n", total, strings.Join(parts, ", "))
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// shorten cuts s to n runes, marking the cut.
func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-3]) + "..."
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// roundDur shows a wait as a person would say it: "45s", "2m30s", "12m", "3h".
func roundDur(d time.Duration) string {
	switch {
	case d < 10*time.Minute:
		d = d.Round(time.Second)
	case d < time.Hour:
		d = d.Round(time.Minute)
	default:
		d = d.Round(time.Hour)
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
