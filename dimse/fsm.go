package dimse

import "fmt"

// The association state machine of PS3.8 §9.2, acceptor side, as data: the
// states, events and actions keep the standard's numbers so that the table
// below can be read against PS3.8 Table 9-10 line by line. Only what an
// acceptor that never requests an association or a release can meet is
// here; any (state, event) pair not in the table is a bug of ours, and the
// association is aborted.
//
// One deviation of form: PS3.8's AE-6 either indicates the A-ASSOCIATE-RQ
// to the user (Sta3) or rejects it at once (Sta13). Here AE-6 always goes to
// Sta3 and the user (the Server) answers with Evt7 (accept) or Evt8
// (reject), so both answers pass through the table.

type state uint8

const (
	sta1  state = 1  // Idle
	sta2  state = 2  // Transport connection open (awaiting A-ASSOCIATE-RQ PDU)
	sta3  state = 3  // Awaiting local A-ASSOCIATE response primitive
	sta6  state = 6  // Association established and ready for data transfer
	sta8  state = 8  // Awaiting local A-RELEASE response primitive
	sta13 state = 13 // Awaiting Transport Connection Close Indication
)

type event uint8

const (
	evt3  event = 3  // A-ASSOCIATE-AC PDU received
	evt4  event = 4  // A-ASSOCIATE-RJ PDU received
	evt5  event = 5  // Transport connection indication
	evt6  event = 6  // A-ASSOCIATE-RQ PDU received
	evt7  event = 7  // A-ASSOCIATE response primitive (accept)
	evt8  event = 8  // A-ASSOCIATE response primitive (reject)
	evt9  event = 9  // P-DATA request primitive
	evt10 event = 10 // P-DATA-TF PDU received
	evt12 event = 12 // A-RELEASE-RQ PDU received
	evt13 event = 13 // A-RELEASE-RP PDU received
	evt14 event = 14 // A-RELEASE response primitive
	evt15 event = 15 // A-ABORT request primitive
	evt16 event = 16 // A-ABORT PDU received
	evt17 event = 17 // Transport connection closed indication
	evt18 event = 18 // ARTIM timer expired
	evt19 event = 19 // Unrecognized or invalid PDU received
)

type action uint8

const (
	ae5 action = iota + 1 // issue transport connection response, start ARTIM → Sta2
	ae6                   // stop ARTIM, issue A-ASSOCIATE indication → Sta3
	ae7                   // send A-ASSOCIATE-AC PDU → Sta6
	ae8                   // send A-ASSOCIATE-RJ PDU, start ARTIM → Sta13
	dt1                   // send P-DATA-TF PDU → Sta6
	dt2                   // issue P-DATA indication → Sta6
	ar2                   // issue A-RELEASE indication → Sta8
	ar4                   // send A-RELEASE-RP PDU, start ARTIM → Sta13
	ar5                   // stop ARTIM → Sta1
	ar7                   // send P-DATA-TF PDU → Sta8
	aa1                   // send A-ABORT PDU (service user), start ARTIM → Sta13
	aa2                   // stop ARTIM, close transport → Sta1
	aa3                   // issue A-ABORT indication, close transport → Sta1
	aa4                   // issue A-P-ABORT indication → Sta1
	aa5                   // stop ARTIM → Sta1
	aa6                   // ignore PDU → Sta13
	aa7                   // send A-ABORT PDU → Sta13
	aa8                   // send A-ABORT PDU (service provider), issue A-P-ABORT indication, start ARTIM → Sta13
)

var actionNames = [...]string{"", "AE-5", "AE-6", "AE-7", "AE-8", "DT-1", "DT-2", "AR-2", "AR-4", "AR-5", "AR-7",
	"AA-1", "AA-2", "AA-3", "AA-4", "AA-5", "AA-6", "AA-7", "AA-8"}

func (a action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", a)
}

func (s state) String() string { return fmt.Sprintf("Sta%d", s) }
func (e event) String() string { return fmt.Sprintf("Evt%d", e) }

type transition struct {
	do   action
	next state
}

// transitions is PS3.8 Table 9-10 restricted to the acceptor's states.
var transitions = map[state]map[event]transition{
	sta1: {
		evt5: {ae5, sta2},
	},
	sta2: {
		evt3:  {aa1, sta13},
		evt4:  {aa1, sta13},
		evt6:  {ae6, sta3},
		evt10: {aa1, sta13},
		evt12: {aa1, sta13},
		evt13: {aa1, sta13},
		evt16: {aa2, sta1},
		evt17: {aa5, sta1},
		evt18: {aa2, sta1},
		evt19: {aa1, sta13},
	},
	sta3: {
		evt3:  {aa8, sta13},
		evt4:  {aa8, sta13},
		evt6:  {aa8, sta13},
		evt7:  {ae7, sta6},
		evt8:  {ae8, sta13},
		evt10: {aa8, sta13},
		evt12: {aa8, sta13},
		evt13: {aa8, sta13},
		evt15: {aa1, sta13},
		evt16: {aa3, sta1},
		evt17: {aa4, sta1},
		evt19: {aa8, sta13},
	},
	sta6: {
		evt3:  {aa8, sta13},
		evt4:  {aa8, sta13},
		evt6:  {aa8, sta13},
		evt9:  {dt1, sta6},
		evt10: {dt2, sta6},
		evt12: {ar2, sta8},
		evt13: {aa8, sta13},
		evt15: {aa1, sta13},
		evt16: {aa3, sta1},
		evt17: {aa4, sta1},
		evt19: {aa8, sta13},
	},
	sta8: {
		evt3:  {aa8, sta13},
		evt4:  {aa8, sta13},
		evt6:  {aa8, sta13},
		evt9:  {ar7, sta8},
		evt10: {aa8, sta13},
		evt12: {aa8, sta13},
		evt13: {aa8, sta13},
		evt14: {ar4, sta13},
		evt15: {aa1, sta13},
		evt16: {aa3, sta1},
		evt17: {aa4, sta1},
		evt19: {aa8, sta13},
	},
	sta13: {
		evt3:  {aa6, sta13},
		evt4:  {aa6, sta13},
		evt6:  {aa7, sta13},
		evt10: {aa6, sta13},
		evt12: {aa6, sta13},
		evt13: {aa6, sta13},
		evt16: {aa2, sta1},
		evt17: {ar5, sta1},
		evt18: {aa2, sta1},
		evt19: {aa7, sta13},
	},
}

// next looks up what event e does in state s; ok is false for a pair the
// table does not hold.
func next(s state, e event) (transition, bool) {
	t, ok := transitions[s][e]
	return t, ok
}

// pduEvent is the event a received PDU is.
func pduEvent(p pdu) event {
	switch p.(type) {
	case *associate:
		if p.pduType() == typeAssociateAC {
			return evt3
		}
		return evt6
	case *associateRJ:
		return evt4
	case *pdataTF:
		return evt10
	case *releaseRQ:
		return evt12
	case *releaseRP:
		return evt13
	case *abort:
		return evt16
	}
	return evt19
}
