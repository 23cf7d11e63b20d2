package status

import (
	"fmt"
	"io"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gcingest/gcingest/bytesize"
	"github.com/gcingest/gcingest/printable"
)

// WriteTable prints the report as a table a person reads at a glance: one
// line per image, each error in full below the table (its cause first), then
// the counts by state of every image recorded. now makes "next attempt"
// relative ("in 2m") and keeps the output reproducible in tests. Names and
// messages are escaped (printable.String): they come from drop folders
// and servers.
func (r *Report) WriteTable(w io.Writer, now time.Time) error {
	if len(r.Images) == 0 && r.Query.Selected() != nil {
		fmt.Fprintf(w, "no image is %s\n", printable.String(describeStates(r.Query)))
	}
	if len(r.Images) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATE\tIMAGE\tFILES\tPROGRESS\tITEM\tNEXT")
		for _, im := range r.Images {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", shorten(printable.String(im.ID), 12), printable.String(im.State),
				shorten(printable.String(imageName(im)), 48), len(im.Files), progress(im), dash(printable.String(im.ItemPK)), next(im, now))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		first := true
		for _, im := range r.Images {
			if im.LastError == "" {
				continue
			}
			if first {
				fmt.Fprintln(w, "\nerrors, the cause first (gcingest status ID for the whole story):")
				first = false
			}
			writeError(w, "  "+printable.String(im.ID)+"  ", im.LastError)
		}
	}
	var parts []string
	total := 0
	for _, s := range States {
		if n := r.Counts[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", s, n))
			total += n
		}
	}
	if len(parts) == 0 {
		parts = []string{"no images"}
	}
	if total < len(r.Images) {
		total = len(r.Images)
	}
	if _, err := fmt.Fprintf(w, "\n%s: %s\n", plural(total, "image", "images"), strings.Join(parts, ", ")); err != nil {
		return err
	}
	var note string
	if sel := r.Query.Selected(); sel != nil && len(r.Images) < total {
		note = fmt.Sprintf("shown: %d %s; --all shows every image, --state S those in one state", len(r.Images), describeStates(r.Query))
	}
	if r.EmptyItems > 0 {
		if note != "" {
			note += "\n"
		}
		note += fmt.Sprintf("%s left empty in the archive by failed imports: the API cannot delete them; remove them in the web interface "+
			"(gcingest status --state failed lists the images, gcingest status ID names the item)", plural(r.EmptyItems, "item", "items"))
	}
	if n := r.unknownTotal(); n > 0 {
		if note != "" {
			note += "\n"
		}
		note += fmt.Sprintf("%s of no type the server imports left in the watched folders (logged as \"file ignored\")", plural(n, "file", "files"))
	}
	if note != "" {
		if _, err := fmt.Fprintln(w, note); err != nil {
			return err
		}
	}
	return writeListeners(w, r.DICOM)
}

// describeStates says which images the query selects.
func describeStates(q Query) string {
	if len(q.States) > 0 {
		return "in state " + strings.Join(q.States, " or ")
	}
	return "in progress or failed"
}

func (r *Report) unknownTotal() int {
	n := 0
	for _, c := range r.Unknown {
		n += c
	}
	return n
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func imageName(im Image) string {
	if im.Title != "" {
		return im.Title
	}
	return im.Key
}

func progress(im Image) string {
	switch {
	case im.Hashing && im.BytesTotal > 0:
		return fmt.Sprintf("hashing %d%% of %s", min(im.BytesSent*100/im.BytesTotal, 100), bytesize.Format(im.BytesTotal))
	case im.BytesTotal > 0 && (im.State == StateUploading || im.State == StatePending || im.State == StateRetrying) && im.BytesSent < im.BytesTotal:
		return fmt.Sprintf("%d%% of %s", im.BytesSent*100/im.BytesTotal, bytesize.Format(im.BytesTotal))
	case im.BytesTotal > 0:
		return bytesize.Format(im.BytesTotal)
	}
	return "-"
}

func next(im Image, now time.Time) string {
	switch {
	case im.NextAttempt.IsZero():
		return "-"
	case !im.NextAttempt.After(now):
		return "now"
	}
	return "in " + roundDur(im.NextAttempt.Sub(now))
}

// writeError prints an error in full: its cause on the first line, then,
// when the error says more, the whole message as recorded, on one line:
// its line breaks become spaces, and what else it quotes from a name is
// escaped.
func writeError(w io.Writer, prefix, msg string) {
	whole := printable.String(oneLine(msg))
	cause := printable.String(Cause(msg))
	fmt.Fprintf(w, "%s%s\n", prefix, cause)
	if cause != whole {
		fmt.Fprintf(w, "%s%s\n", strings.Repeat(" ", len([]rune(prefix))), whole)
	}
}

// httpStatus finds the status of an HTTP error in a wrapped message:
// "...: 400 Bad Request: archive: Invalid hyperlink - Object does not exist."
var httpStatus = regexp.MustCompile(`: ([1-5][0-9][0-9] [A-Z][A-Za-z' -]*[a-z])(: |$)`)

// Cause returns what went wrong, without what was being done: the server's
// answer after the HTTP status when there is one ("archive: Invalid
// hyperlink - Object does not exist. (400 Bad Request)"), else the last
// part of the wrapped message.
func Cause(msg string) string {
	msg = oneLine(msg)
	if loc := httpStatus.FindAllStringSubmatchIndex(msg, -1); len(loc) > 0 {
		l := loc[len(loc)-1]
		status := msg[l[2]:l[3]]
		if rest := msg[l[1]:]; rest != "" {
			return rest + " (" + status + ")"
		}
		return status
	}
	if i := strings.LastIndex(msg, ": "); i >= 0 && i+2 < len(msg) {
		return msg[i+2:]
	}
	return msg
}

// WriteDetail prints one image's whole story: files, uploads, values and
// item, where the files went, and every error with its time. Names and
// messages are escaped as in WriteTable.
func (r *Report) WriteDetail(w io.Writer, now time.Time) error {
	if len(r.Images) == 0 {
		_, err := fmt.Fprintf(w, "no image with ID %s\n", printable.String(r.Query.ID))
		return err
	}
	im := r.Images[0]
	d := im.Detail
	if d == nil {
		d = &Detail{}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, printable.String(v))
		}
	}
	row("image", im.ID)
	row("state", im.State)
	row("watch", im.Watch)
	row("key", im.Key)
	row("kind", d.Kind)
	row("title", im.Title)
	row("recorded", stamp(d.Created))
	row("updated", stamp(im.Updated))
	row("finished", stamp(d.Finished))
	if im.State != StateFinished && im.State != StateDuplicate {
		row("progress", progress(im))
	}
	if !im.NextAttempt.IsZero() {
		row("next attempt", next(im, now)+" ("+stamp(im.NextAttempt)+")")
	}
	if im.Attempts > 0 {
		row("attempts", fmt.Sprint(im.Attempts))
	}
	if im.EmptyItem {
		row("item", im.ItemPK+" (left empty in the archive: the API cannot delete it; remove it in the web interface)")
	} else {
		row("item", im.ItemPK)
	}
	row("upload session", d.SessionPK)
	row("image url", d.ImageURL)
	row("files went to", d.MovedTo)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(d.Files) > 0 {
		fmt.Fprintln(w, "\nfiles:")
		for _, f := range d.Files {
			p := f.Path
			if p == "" {
				p = f.Rel
			}
			fmt.Fprintf(w, "  %s  %s\n", printable.String(p), bytesize.Format(f.Size))
		}
	}
	if len(d.Uploads) > 0 {
		fmt.Fprintln(w, "\nuploads:")
		for _, u := range d.Uploads {
			st := fmt.Sprintf("%s of %s sent", bytesize.Format(u.Sent), bytesize.Format(u.Size))
			if u.Completed {
				st = "completed, " + bytesize.Format(u.Size)
			}
			fmt.Fprintf(w, "  %s  %s  %s\n", printable.String(u.Filename), st, dash(printable.String(u.PK)))
		}
	}
	if len(d.Values) > 0 {
		fmt.Fprintln(w, "\nvalues of the item:")
		for _, v := range d.Values {
			conf := "not yet on the item"
			if v.Confirmed {
				conf = "on the item"
			}
			files := make([]string, len(v.Files))
			for i, f := range v.Files {
				files[i] = printable.String(f)
			}
			fmt.Fprintf(w, "  %s (%s) %s  %s\n", printable.String(v.Interface), printable.String(v.Kind), strings.Join(files, ", "), conf)
		}
	}
	errs := d.Errors
	if len(errs) == 0 && im.LastError != "" {
		errs = []ErrorNote{{State: im.State, Msg: im.LastError}}
	}
	if len(errs) > 0 {
		fmt.Fprintln(w, "\nerrors, oldest first, the cause first:")
		for _, e := range errs {
			writeError(w, fmt.Sprintf("  %s  %s  ", stamp(e.At), printable.String(e.State)), e.Msg)
		}
	}
	return nil
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format(time.DateTime)
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
