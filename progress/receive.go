package progress

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/gcingest/gcingest/printable"
	"github.com/gcingest/gcingest/status"
)

// linger is how long a caller's line stays once its associations have
// ended and no instance came, saying what it received: a series sent in a
// second would otherwise flash by between two redraws, and a sender that
// opens an association per instance would make its line blink.
const linger = 5 * time.Second

// maxCallerLines caps the lines of callers drawn; one more line counts
// the rest.
const maxCallerLines = 4

// callerKey names a calling AE title at one listener.
type callerKey struct {
	listener int    // the listener's index among those reported
	ae       string // the calling AE title
}

// sender is a calling AE title's counters at one listener as last seen,
// and the burst of sending it is in, if any. A burst begins at the first
// sample that sees an association open or a new instance, and ends once
// the caller has had no association and sent no instance for linger; its
// line shows what came since the sample before it began.
type sender struct {
	calledAE string
	counts   status.ListenerCounts // as last seen
	seen     time.Time             // when counts were seen

	active  bool
	since   time.Time             // the sample before the burst began
	from    status.ListenerCounts // the counters then
	changed time.Time             // the last sample that saw an association or a new instance
}

// incoming is what the DICOM listeners receive, as the display knows it
// from the counters they report (cumulative, per calling AE title): the
// display keeps the bursts and their rates itself.
type incoming struct {
	senders   map[callerKey]*sender
	listeners int       // listeners reported: with more than one, a line names the called AE title
	observed  bool      // counters were seen before
	last      time.Time // when they were seen last
}

// observe notes the listeners' counters at now.
func (in *incoming) observe(ls []status.Listener, now time.Time) {
	if in.senders == nil {
		in.senders = map[callerKey]*sender{}
	}
	in.listeners = len(ls)
	for i, l := range ls {
		for ae, c := range l.Callers {
			k := callerKey{listener: i, ae: ae}
			s := in.senders[k]
			if s == nil {
				// A caller not reported before had counted nothing
				// then. Counters there before the display first looked
				// count too: the agent hands them over as its listeners
				// start, so what they counted is this run's.
				s = &sender{calledAE: l.AETitle, seen: in.last}
				if !in.observed {
					s.seen = now
				}
				in.senders[k] = s
			}
			if s.active && s.counts.Current == 0 && now.Sub(s.changed) > linger {
				s.active = false // ended before this sample
			}
			busy := c.Current > 0 || c.Instances > s.counts.Instances
			if busy && !s.active {
				s.active, s.since, s.from = true, s.seen, s.counts
			}
			if busy {
				s.changed = now
			}
			s.counts, s.seen = c, now
		}
	}
	in.observed, in.last = true, now
}

// lines are the callers' lines at now in at most fit columns, ordered by
// listener and calling AE title: "receiving from CT1" while an
// association is open, "received from CT1" for linger after.
func (in *incoming) lines(now time.Time, fit int) []string {
	var keys []callerKey
	for k, s := range in.senders {
		if s.active && (s.counts.Current > 0 || now.Sub(s.changed) <= linger) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b callerKey) int {
		return cmp.Or(cmp.Compare(a.listener, b.listener), cmp.Compare(a.ae, b.ae))
	})
	var out []string
	for i, k := range keys {
		if i == maxCallerLines {
			out = append(out, cut(fmt.Sprintf("receiving from %d more callers", len(keys)-i), fit))
			break
		}
		s := in.senders[k]
		// The calling AE title came over the network: escaped before it
		// is cut, like a file name.
		name := "receiving from " + printable.String(k.ae)
		end := now
		if s.counts.Current == 0 {
			name, end = "received from "+printable.String(k.ae), s.changed
		}
		if in.listeners > 1 {
			name += " to " + printable.String(s.calledAE)
		}
		out = append(out, nameLine("", name, receiveForms(s.counts.Current, s.counts.Instances-s.from.Instances,
			s.counts.Bytes-s.from.Bytes, end.Sub(s.since)), fit))
	}
	return out
}

// receiveForms are a burst's figures and shorter forms of them, longest
// first: "2 associations  120 instances  60.0 MiB  12.3 MiB/s", without
// the associations (none is open once the sender is done), without the
// rate, the instances alone. The rate is left out over less than half a
// second, which says little.
func receiveForms(assocs, instances, bytes int64, elapsed time.Duration) []string {
	figs := fmt.Sprintf("%d %s", instances, plural(int(instances), "instance", "instances"))
	forms := []string{figs}
	figs += "  " + size(float64(bytes))
	forms = append(forms, figs)
	if s := elapsed.Seconds(); s >= 0.5 {
		figs += "  " + size(float64(bytes)/s) + "/s"
		forms = append(forms, figs)
	}
	if assocs > 0 {
		forms = append(forms, fmt.Sprintf("%d %s  %s", assocs, plural(int(assocs), "association", "associations"), figs))
	}
	slices.Reverse(forms)
	return forms
}
