package status

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/gcingest/gcingest/bytesize"
	"github.com/gcingest/gcingest/printable"
)

// Listener is one DICOM listener ([[dicom]] table) of a running agent, as
// /status shows it: its counters since the agent started, in all and per
// calling AE title.
type Listener struct {
	Listen  string `json:"listen"`
	AETitle string `json:"ae_title"`
	TLS     bool   `json:"tls,omitempty"`
	Spool   string `json:"spool"`
	ListenerCounts
	// Callers holds the counters per calling AE title; a receiver keeps
	// them for a bounded number of titles, so their sum may be less than
	// the totals.
	Callers map[string]ListenerCounts `json:"callers,omitempty"`
}

// ListenerCounts are a DICOM listener's counters.
type ListenerCounts struct {
	Current   int64 `json:"associations_current"` // associations established now
	Total     int64 `json:"associations_total"`   // associations established
	Refused   int64 `json:"associations_refused"` // association requests rejected
	Instances int64 `json:"instances_received"`   // instances stored (C-STORE success)
	Bytes     int64 `json:"bytes_received"`       // data set bytes of those instances
}

// DICOMSource gives the DICOM listeners of a running agent. A Source that
// also implements it gets them in /metrics.
type DICOMSource interface {
	DICOMListeners() []Listener
}

// writeListeners prints a short line per listener for `gcingest status`:
// what it receives now and has received since the agent started.
func writeListeners(w io.Writer, ls []Listener) error {
	if len(ls) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	for _, l := range ls {
		tls := ""
		if l.TLS {
			tls = ", TLS"
		}
		line := fmt.Sprintf("dicom %s on %s%s: %s now, %d since start, %d refused; %s, %s received",
			l.AETitle, l.Listen, tls, plural(int(l.Current), "association", "associations"), l.Total, l.Refused,
			plural(int(l.Instances), "instance", "instances"), bytesize.Format(l.Bytes))
		if len(l.Callers) > 0 {
			var from []string
			for _, ae := range sortedKeys(l.Callers) {
				c := l.Callers[ae]
				if c.Refused > 0 && c.Total == 0 {
					from = append(from, fmt.Sprintf("%s refused %d", ae, c.Refused))
					continue
				}
				from = append(from, fmt.Sprintf("%s %d", ae, c.Instances))
			}
			line += " (" + strings.Join(from, ", ") + ")"
		}
		if _, err := fmt.Fprintln(w, printable.String(line)); err != nil {
			return err
		}
	}
	return nil
}

// writeDICOMMetrics writes the listeners' counters: per listener, and per
// listener and calling AE title in families of their own, so that a sum
// over one family never counts an association twice.
func writeDICOMMetrics(w io.Writer, ls []Listener) {
	if len(ls) == 0 {
		return
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].Listen < ls[j].Listen })
	type family struct {
		name, kind, help string
		val              func(ListenerCounts) int64
	}
	fams := []family{
		{"associations", "gauge", "associations established now", func(c ListenerCounts) int64 { return c.Current }},
		{"associations_total", "counter", "associations established since start", func(c ListenerCounts) int64 { return c.Total }},
		{"associations_refused_total", "counter", "association requests refused since start (caller not allowed, wrong called AE title, too many at once)", func(c ListenerCounts) int64 { return c.Refused }},
		{"instances_received_total", "counter", "instances received and stored durably since start (C-STORE success)", func(c ListenerCounts) int64 { return c.Instances }},
		{"received_bytes_total", "counter", "data set bytes of the instances received since start", func(c ListenerCounts) int64 { return c.Bytes }},
	}
	for _, f := range fams {
		fmt.Fprintf(w, "# HELP gcingest_dicom_%s DICOM listener: %s.\n", f.name, f.help)
		fmt.Fprintf(w, "# TYPE gcingest_dicom_%s %s\n", f.name, f.kind)
		for _, l := range ls {
			fmt.Fprintf(w, "gcingest_dicom_%s{listen=%q,ae_title=%q} %d\n", f.name, label(l.Listen), label(l.AETitle), f.val(l.ListenerCounts))
		}
	}
	for _, f := range fams {
		fmt.Fprintf(w, "# HELP gcingest_dicom_caller_%s DICOM listener, by calling AE title: %s.\n", f.name, f.help)
		fmt.Fprintf(w, "# TYPE gcingest_dicom_caller_%s %s\n", f.name, f.kind)
		for _, l := range ls {
			for _, ae := range sortedKeys(l.Callers) {
				fmt.Fprintf(w, "gcingest_dicom_caller_%s{listen=%q,calling_ae=%q} %d\n", f.name, label(l.Listen), label(ae), f.val(l.Callers[ae]))
			}
		}
	}
}

// label keeps a label value valid in the exposition format, which knows
// only the escapes \\, \" and \n: a calling AE title is the caller's text,
// so anything outside printable ASCII becomes '?' before %q quotes it.
func label(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}
