package dimse

import "testing"

// TestTransitionTable checks the table against rules PS3.8 Table 9-10
// follows, so that a typo in one line shows.
func TestTransitionTable(t *testing.T) {
	acceptorStates := []state{sta1, sta2, sta3, sta6, sta8, sta13}
	known := map[state]bool{}
	for _, s := range acceptorStates {
		known[s] = true
	}
	pduEvents := []event{evt3, evt4, evt6, evt10, evt12, evt13, evt16, evt19}
	for s, row := range transitions {
		for e, tr := range row {
			if !known[tr.next] {
				t.Errorf("%s %s → %s: not an acceptor state", s, e, tr.next)
			}
		}
	}
	// Every state after Sta1 handles every PDU and the transport closing.
	for _, s := range acceptorStates[1:] {
		for _, e := range append(pduEvents, evt17) {
			if _, ok := next(s, e); !ok {
				t.Errorf("%s has no transition for %s", s, e)
			}
		}
	}
	// Sta3, Sta6 and Sta8 answer an unexpected PDU with AA-8; Sta2 with
	// AA-1; Sta13 ignores it (AA-6) or aborts (AA-7).
	for _, tc := range []struct {
		s    state
		e    event
		want transition
	}{
		{sta1, evt5, transition{ae5, sta2}},
		{sta2, evt6, transition{ae6, sta3}},
		{sta2, evt10, transition{aa1, sta13}},
		{sta2, evt18, transition{aa2, sta1}},
		{sta3, evt7, transition{ae7, sta6}},
		{sta3, evt8, transition{ae8, sta13}},
		{sta3, evt10, transition{aa8, sta13}},
		{sta6, evt9, transition{dt1, sta6}},
		{sta6, evt10, transition{dt2, sta6}},
		{sta6, evt12, transition{ar2, sta8}},
		{sta6, evt6, transition{aa8, sta13}},
		{sta6, evt15, transition{aa1, sta13}},
		{sta6, evt16, transition{aa3, sta1}},
		{sta6, evt17, transition{aa4, sta1}},
		{sta8, evt14, transition{ar4, sta13}},
		{sta8, evt9, transition{ar7, sta8}},
		{sta8, evt10, transition{aa8, sta13}},
		{sta13, evt10, transition{aa6, sta13}},
		{sta13, evt6, transition{aa7, sta13}},
		{sta13, evt17, transition{ar5, sta1}},
		{sta13, evt18, transition{aa2, sta1}},
	} {
		if got, ok := next(tc.s, tc.e); !ok || got != tc.want {
			t.Errorf("%s %s: got %s → %s (%v), want %s → %s", tc.s, tc.e, got.do, got.next, ok, tc.want.do, tc.want.next)
		}
	}
	// What an acceptor never does is not in the table: it would be a bug.
	for _, tc := range []struct {
		s state
		e event
	}{{sta6, evt14}, {sta2, evt9}, {sta13, evt9}, {sta1, evt6}} {
		if _, ok := next(tc.s, tc.e); ok {
			t.Errorf("%s %s is in the table", tc.s, tc.e)
		}
	}
}
