package dimse

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"time"
)

// RejectedError is an A-ASSOCIATE-RJ received by Echo: the called AE
// refused the association. Result, Source and Reason are PS3.8 §9.3.4's.
type RejectedError struct {
	Result, Source, Reason byte
}

// Error says how long the refusal holds and why, in PS3.8's words.
func (e *RejectedError) Error() string {
	why := fmt.Sprintf("source %d, reason %d", e.Source, e.Reason)
	switch {
	case e.Source == rjSourceUser && e.Reason == rjUserCallingAENotAllowed:
		why = "calling AE title not recognized"
	case e.Source == rjSourceUser && e.Reason == rjUserCalledAENotKnown:
		why = "called AE title not recognized"
	case e.Source == rjSourceUser && e.Reason == rjUserAppContext:
		why = "application context not supported"
	case e.Source == rjSourcePresentation && e.Reason == rjPresentationLimitReached:
		why = "local limit exceeded"
	case e.Source == rjSourcePresentation && e.Reason == 1:
		why = "temporary congestion"
	}
	kind := "permanently"
	if e.Result == rjTransient {
		kind = "for now"
	}
	return fmt.Sprintf("association rejected %s: %s", kind, why)
}

// Echo verifies a DICOM peer (PS3.4 Annex A): over conn, already open (a
// TCP connection, or TLS), it requests an association from callingAE to
// calledAE for Verification, sends a C-ECHO, and releases the association.
// It is what `gcingest check --echo` needs to test a listener end to end.
// A refusal is a *RejectedError. conn is closed on return; ctx bounds the
// whole exchange.
func Echo(ctx context.Context, conn net.Conn, callingAE, calledAE string) (err error) {
	defer conn.Close()
	// ctx ending fails the pending read or write (and is then the error
	// returned); without a deadline of its own, ARTIM's bounds the wait.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(past) })
	defer stop()
	if _, ok := ctx.Deadline(); !ok {
		conn.SetDeadline(time.Now().Add(DefaultARTIMTimeout))
	}
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("c-echo %s: %w", calledAE, ctx.Err())
		}
	}()
	br := bufio.NewReader(conn)
	send := func(p pdu) error {
		if _, err := conn.Write(p.appendTo(nil)); err != nil {
			return fmt.Errorf("c-echo %s: send: %w", calledAE, err)
		}
		return nil
	}
	recv := func() (pdu, error) {
		p, _, err := readPDU(br, nil, DefaultMaxPDULength)
		if err != nil {
			return nil, fmt.Errorf("c-echo %s: receive: %w", calledAE, err)
		}
		if ab, ok := p.(*abort); ok {
			return nil, fmt.Errorf("c-echo %s: association aborted (source %d, reason %d)", calledAE, ab.Source, ab.Reason)
		}
		return p, nil
	}

	const ctxID = 1
	if err := send(&associate{
		ProtocolVersion:    1,
		CalledAE:           calledAE,
		CallingAE:          callingAE,
		ApplicationContext: applicationContext,
		Contexts:           []presentationRQ{{ID: ctxID, AbstractSyntax: VerificationSOPClass, TransferSyntaxes: []string{ImplicitVRLittleEndian}}},
		MaxPDULength:       DefaultMaxPDULength,
		ImplementationUID:  ImplementationClassUID,
		ImplementationVer:  ImplementationVersionName,
	}); err != nil {
		return err
	}
	p, err := recv()
	if err != nil {
		return err
	}
	switch a := p.(type) {
	case *associateRJ:
		return fmt.Errorf("c-echo %s: %w", calledAE, &RejectedError{a.Result, a.Source, a.Reason})
	case *associate:
		if !a.ac || len(a.Results) != 1 || a.Results[0].Result != pcAcceptance {
			send(&abort{abortSourceUser, abortNotSpecified})
			return fmt.Errorf("c-echo %s: Verification was not accepted", calledAE)
		}
	default:
		send(&abort{abortSourceUser, abortNotSpecified})
		return fmt.Errorf("c-echo %s: PDU type 0x%02x instead of an A-ASSOCIATE-AC", calledAE, p.pduType())
	}

	rq := request{Field: cEchoRQ, MessageID: 1, SOPClassUID: VerificationSOPClass}.encode()
	if err := send(&pdataTF{PDVs: []pdv{{ContextID: ctxID, Command: true, Last: true, Data: rq}}}); err != nil {
		return err
	}
	var rsp []byte
	for done := false; !done; {
		p, err := recv()
		if err != nil {
			return err
		}
		pd, ok := p.(*pdataTF)
		if !ok {
			return fmt.Errorf("c-echo %s: PDU type 0x%02x instead of the C-ECHO-RSP", calledAE, p.pduType())
		}
		for _, v := range pd.PDVs {
			if len(rsp)+len(v.Data) > maxCommandSet {
				return fmt.Errorf("c-echo %s: response longer than %d bytes", calledAE, maxCommandSet)
			}
			rsp = append(rsp, v.Data...)
			done = done || v.Command && v.Last
		}
	}
	field, status, err := decodeResponse(rsp)
	if err != nil {
		return fmt.Errorf("c-echo %s: %w", calledAE, err)
	}
	if field != cEchoRSP || status != StatusSuccess {
		return fmt.Errorf("c-echo %s: answered command 0x%04x with status 0x%04x", calledAE, field, status)
	}

	if err := send(&releaseRQ{}); err != nil {
		return err
	}
	if p, err = recv(); err != nil {
		return err
	}
	if p.pduType() != typeReleaseRP {
		return fmt.Errorf("c-echo %s: PDU type 0x%02x instead of an A-RELEASE-RP", calledAE, p.pduType())
	}
	return nil
}
