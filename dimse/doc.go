// Package dimse is a DICOM Storage SCP: the network side of a storage node
// that modalities and PACS send images to with C-STORE.
//
// It speaks the DICOM upper layer protocol (PS3.8) over TCP and the DIMSE
// services C-ECHO and C-STORE (PS3.7) as the association acceptor, and
// nothing else: no query or retrieve, so nothing on its port tells a caller
// what was received.
//
// # Use
//
// Make a Server with NewServer from a Config (the called AE title, the
// allow list of callers, a Store) and run it with Serve on a listener; Serve
// returns when its ctx is cancelled, after every association has ended.
// SpoolStore is the Store that writes each instance durably as a Part 10
// file into a folder that an ordinary watch then uploads; on Linux, while
// a Serve uses it, through a write-ahead journal beside that folder, so
// that an instance costs its sender one flush rather than two file system
// commits (see SpoolStore).
//
// # Protocol
//
// Associations are negotiated per PS3.8 §9.3: the DICOM application
// context, presentation contexts for Verification and every Storage SOP
// class in StorageSOPClasses (and, only with Config.AcceptUnknownSOPClasses,
// every SOP class UnknownSOPClass says it does not know) with the transfer
// syntaxes of
// Config.TransferSyntaxes (the caller's preferred one among them is taken),
// and the maximum PDU length both ways: the server announces
// Config.MaxPDULength and refuses a larger P-DATA-TF, and it never sends
// PDUs longer than the caller announced. A request from a caller not on the
// allow list, for another called AE title, or beyond Config.MaxAssociations
// is rejected with A-ASSOCIATE-RJ and logged.
//
// The association's life follows the state machine of PS3.8 §9.2, kept as a
// table in fsm.go with the standard's state, event and action numbers; the
// ARTIM timer bounds the wait for the request and for the caller's close
// after a release, rejection or abort, and an idle timer aborts an
// association on which nothing arrives.
//
// A C-STORE's data set is handed to the Store as a stream read off the
// network PDU by PDU, so an association holds one PDU in memory, whatever
// the size of the instance. The Store's answer becomes the C-STORE status:
// success only after a nil return, "out of resources" (A700) for a failure
// to store, "cannot understand" (C000) for a data set that cannot be read
// (ErrInvalidDataSet), "data set does not match SOP class" (A900) for one
// whose SOP class is not its command's (ErrSOPClassMismatch), and
// "duplicate SOP instance" (0111) for one whose Study, Series and SOP
// Instance UIDs are stored already with other content
// (ErrConflictingInstance); the same content again is a resend, answered
// success and stored once.
//
// # Wiring
//
// What a [[dicom]] table of the agent's config maps to (package agent,
// dicom.go, does this; docs/CONFORMANCE.md states it for PACS
// administrators): listen is the net.Listener given to Serve (wrapped by
// tls.NewListener for TLS, with tls.RequireAndVerifyClientCert and a
// ClientCAs pool for mutual TLS); ae_title is Config.AETitle; the allow
// list is Config.Allow, one Caller per entry (an AE title, a network in
// CIDR form, or both); spool, the folder of the watch it feeds, is given
// to NewSpoolStore, and that watch is otherwise an ordinary watch (the temporary files are hidden and end in .tmp, which
// the grouper never picks up). Stats and StatsByCaller give the counters
// for status and /metrics. Echo is the C-ECHO client `check --echo` needs:
// it verifies a listener end to end over a connection the caller opens
// (TCP or TLS), and reports a refusal as a *RejectedError.
//
// # Robustness
//
// The PDU decoder bounds every length it reads by the bytes it holds and
// never allocates more than what actually arrived, up to the negotiated
// maximum; it is fuzzed (FuzzDecodePDU). A malformed PDU aborts its
// association (A-ABORT with the reason), never the server.
package dimse
