package dimse

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// assoc is one connection, from its opening to its close, driven through
// the state table (fsm.go). One goroutine owns it; only interrupt is called
// from another.
type assoc struct {
	s     *Server
	conn  net.Conn
	br    *bufio.Reader
	log   *slog.Logger
	state state

	rbuf    []byte // the last PDU read; pending aliases it
	wbuf    []byte
	pending []pdv // PDVs of the last P-DATA-TF not yet consumed

	peerMax   uint32          // the caller's max PDU length; 0: no limit
	syntax    map[byte]string // accepted presentation context → transfer syntax
	abstract  map[byte]string // accepted presentation context → abstract syntax
	callingAE string
	calledAE  string

	// What the association stored, for its last log line.
	started   time.Time
	instances int
	bytes     int64

	// desync: a PDU could not be framed or decoded; what follows on the
	// connection is not read as PDUs any more.
	desync bool

	mu          sync.Mutex
	interrupted bool // ctx was cancelled: every read fails at once
}

// errInterrupted: the server is stopping.
var errInterrupted = errors.New("server stopping")

// past is a deadline that has passed: it fails a blocked read at once.
var past = time.Unix(1, 0)

// interrupt makes the association's pending and future reads fail, so
// that it aborts and ends within moments of the server's ctx being
// cancelled. Writes keep their own deadline, so the A-ABORT still goes out.
func (a *assoc) interrupt() {
	a.mu.Lock()
	a.interrupted = true
	a.conn.SetReadDeadline(past)
	a.mu.Unlock()
}

func (a *assoc) setReadDeadline(t time.Time) {
	a.mu.Lock()
	if a.interrupted {
		a.conn.SetReadDeadline(past)
	} else {
		a.conn.SetReadDeadline(t)
	}
	a.mu.Unlock()
}

func (s *Server) serveConn(ctx context.Context, conn net.Conn, busy bool) {
	a := &assoc{
		s:       s,
		conn:    conn,
		br:      bufio.NewReaderSize(conn, 32<<10),
		log:     s.log.With("remote", conn.RemoteAddr().String()),
		state:   sta1,
		started: time.Now(),
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, a.interrupt)
	defer stop()

	if err := a.fire(evt5, nil); err != nil {
		a.log.Error("dicom association", "err", err)
		return
	}
	// Sta2: the A-ASSOCIATE-RQ must come within ARTIM.
	p, err := a.read(time.Now().Add(a.s.cfg.ARTIMTimeout))
	if err != nil {
		a.end(err)
		return
	}
	rq, ok := p.(*associate)
	if !ok || a.state != sta3 {
		a.end(fmt.Errorf("expected an A-ASSOCIATE-RQ, got PDU type 0x%02x", p.pduType()))
		return
	}
	a.callingAE, a.calledAE = rq.CallingAE, rq.CalledAE
	a.log = a.log.With("calling_ae", rq.CallingAE, "called_ae", rq.CalledAE)
	ac, rj, why := s.negotiate(rq, conn.RemoteAddr(), busy)
	if rj != nil {
		s.refused.Add(1)
		s.count(rq.CallingAE, true, func(st *Stats) { st.Refused++ })
		a.log.Warn("dicom association refused", "reason", why)
		if err := a.fire(evt8, rj); err != nil {
			a.end(err)
			return
		}
		a.end(nil)
		return
	}
	a.peerMax = rq.MaxPDULength
	a.syntax, a.abstract = map[byte]string{}, map[byte]string{}
	accepted := 0
	var unknown []string // accepted SOP classes not in StorageSOPClasses
	for i, r := range ac.Results {
		if r.Result == pcAcceptance {
			as := rq.Contexts[i].AbstractSyntax
			a.syntax[r.ID] = r.TransferSyntax
			a.abstract[r.ID] = as
			accepted++
			if as != VerificationSOPClass && !s.storage[as] && !slices.Contains(unknown, as) {
				unknown = append(unknown, as)
			}
		}
	}
	if err := a.fire(evt7, ac); err != nil {
		a.end(err)
		return
	}
	s.current.Add(1)
	s.total.Add(1)
	s.count(a.callingAE, false, func(st *Stats) { st.Current++; st.Total++ })
	defer func() {
		s.current.Add(-1)
		s.count(a.callingAE, false, func(st *Stats) { st.Current-- })
	}()
	attrs := []any{"contexts", len(ac.Results), "accepted", accepted,
		"max_pdu", rq.MaxPDULength, "implementation", rq.ImplementationUID, "version", rq.ImplementationVer}
	if len(unknown) > 0 {
		attrs = append(attrs, "unknown_sop_classes", strings.Join(unknown, " "))
	}
	a.log.Info("dicom association accepted", attrs...)
	a.end(a.serve(ctx))
	// However it ended, the association counts as ended once what it
	// stored is in the spool (a release waited already, before its answer).
	if j, ok := s.cfg.Store.(journaled); ok && a.instances > 0 {
		j.settle(ctx)
	}
}

// negotiate answers an A-ASSOCIATE-RQ: an AC, or an RJ and why.
func (s *Server) negotiate(rq *associate, remote net.Addr, busy bool) (*associate, *associateRJ, string) {
	if rq.ProtocolVersion&1 == 0 {
		return nil, &associateRJ{rjPermanent, rjSourceACSE, rjACSEProtocolVersion}, fmt.Sprintf("protocol version 0x%04x", rq.ProtocolVersion)
	}
	if rq.ApplicationContext != applicationContext {
		return nil, &associateRJ{rjPermanent, rjSourceUser, rjUserAppContext}, fmt.Sprintf("application context %q", rq.ApplicationContext)
	}
	if rq.CalledAE != s.cfg.AETitle {
		return nil, &associateRJ{rjPermanent, rjSourceUser, rjUserCalledAENotKnown}, fmt.Sprintf("called AE title %q is not %q", rq.CalledAE, s.cfg.AETitle)
	}
	var addr netip.Addr
	if ta, ok := remote.(*net.TCPAddr); ok {
		addr = ta.AddrPort().Addr()
	} else if ap, err := netip.ParseAddrPort(remote.String()); err == nil {
		addr = ap.Addr()
	}
	allowed := false
	for _, c := range *s.allow.Load() {
		if c.matches(rq.CallingAE, addr) {
			allowed = true
			break
		}
	}
	if !allowed {
		return nil, &associateRJ{rjPermanent, rjSourceUser, rjUserCallingAENotAllowed}, "calling AE title and address are not on the allow list"
	}
	if busy {
		return nil, &associateRJ{rjTransient, rjSourcePresentation, rjPresentationLimitReached}, fmt.Sprintf("%d associations already", s.cfg.MaxAssociations)
	}
	ac := &associate{
		ac:                 true,
		ProtocolVersion:    1,
		CalledAE:           rq.CalledAE,
		CallingAE:          rq.CallingAE,
		ApplicationContext: applicationContext,
		MaxPDULength:       s.cfg.MaxPDULength,
		ImplementationUID:  ImplementationClassUID,
		ImplementationVer:  ImplementationVersionName,
	}
	seen := map[byte]bool{}
	for _, pc := range rq.Contexts {
		r := presentationAC{ID: pc.ID, Result: pcAbstractNotSupported, TransferSyntax: ImplicitVRLittleEndian}
		switch {
		case pc.ID%2 == 0 || seen[pc.ID]:
			r.Result = pcUserRejection
		case pc.AbstractSyntax == VerificationSOPClass:
			r.Result = pcTransferNotSupported
			for _, ts := range pc.TransferSyntaxes {
				if ts == ImplicitVRLittleEndian || ts == ExplicitVRLittleEndian || s.syntaxes[ts] {
					r.Result, r.TransferSyntax = pcAcceptance, ts
					break
				}
			}
		case s.storage[pc.AbstractSyntax] || s.cfg.AcceptUnknownSOPClasses && UnknownSOPClass(pc.AbstractSyntax):
			// The caller's order is its preference, usually the file's own
			// encoding: taking its first that we accept spares it a
			// conversion, and the data set is stored as it arrives.
			r.Result = pcTransferNotSupported
			for _, ts := range pc.TransferSyntaxes {
				if s.syntaxes[ts] {
					r.Result, r.TransferSyntax = pcAcceptance, ts
					break
				}
			}
		}
		seen[pc.ID] = true
		ac.Results = append(ac.Results, r)
	}
	return ac, nil, ""
}

// fire runs event e through the state table and performs the action's
// part on the transport: sending out (the PDU of a send action), closing
// the connection, starting ARTIM. Indications (AE-6, DT-2, AR-2) are left
// to the caller, which sees them in a.state.
func (a *assoc) fire(e event, out pdu) error {
	t, ok := next(a.state, e)
	if !ok {
		// A pair the table does not hold is a bug of ours: abort.
		a.log.Error("dicom association: event not allowed in state", "event", e.String(), "state", a.state.String())
		a.send(&abort{abortSourceProvider, abortUnexpectedPDU})
		a.state = sta1
		a.conn.Close()
		return fmt.Errorf("%s in %s: not in the state table", e, a.state)
	}
	a.state = t.next
	switch t.do {
	case ae7, ae8, dt1, ar7, ar4:
		if err := a.send(out); err != nil {
			a.state = sta1
			a.conn.Close()
			return err
		}
	case aa1, aa7, aa8:
		ab, _ := out.(*abort)
		if ab == nil {
			ab = &abort{Source: abortSourceProvider, Reason: abortNotSpecified}
			if t.do == aa1 {
				ab.Source = abortSourceUser
			}
		}
		if err := a.send(ab); err != nil {
			a.state = sta1
			a.conn.Close()
			return err
		}
	case aa2, aa3, aa5, ar5:
		a.conn.Close()
	}
	return nil
}

// send writes one PDU within ARTIMTimeout.
func (a *assoc) send(p pdu) error {
	a.wbuf = p.appendTo(a.wbuf[:0])
	a.conn.SetWriteDeadline(time.Now().Add(a.s.cfg.ARTIMTimeout))
	if _, err := a.conn.Write(a.wbuf); err != nil {
		return fmt.Errorf("send PDU type 0x%02x: %w", p.pduType(), err)
	}
	return nil
}

// read reads one PDU, waiting until deadline, and runs what it is (or
// what went wrong) through the state table. An error means the association
// is over or must be ended (see end); a.state says which.
func (a *assoc) read(deadline time.Time) (pdu, error) {
	a.setReadDeadline(deadline)
	p, buf, err := readPDU(a.br, a.rbuf, a.s.cfg.MaxPDULength)
	a.rbuf = buf
	if err != nil {
		var pe *protocolError
		var ne net.Error
		switch {
		case errors.As(err, &pe):
			// Evt19: an invalid PDU is answered by an A-ABORT naming why.
			a.desync = true
			if ferr := a.fire(evt19, &abort{abortSourceProvider, pe.Reason}); ferr != nil {
				return nil, ferr
			}
			return nil, err
		case errors.As(err, &ne) && ne.Timeout():
			// A PDU may have been cut mid-way: the stream is out of step.
			a.desync = true
			a.mu.Lock()
			stopping := a.interrupted
			a.mu.Unlock()
			if stopping {
				err = errInterrupted
			} else {
				err = fmt.Errorf("nothing received in time: %w", err)
			}
			if a.state == sta2 || a.state == sta13 {
				// Evt18, ARTIM expired. Elsewhere (Sta6) the idle timer or
				// the server stopping is a local A-ABORT request, which end
				// sends.
				a.fire(evt18, nil)
			}
			return nil, err
		default:
			// Evt17: the connection closed or broke.
			a.fire(evt17, nil)
			return nil, fmt.Errorf("connection lost: %w", err)
		}
	}
	if err := a.fire(pduEvent(p), nil); err != nil {
		return nil, err
	}
	return p, nil
}

// end finishes the association from whatever state it is in, err being why
// (nil for a normal end): a release is answered, an established
// association is aborted, and after either the caller has ARTIM to close
// the connection (Sta13).
func (a *assoc) end(err error) {
	switch a.state {
	case sta8:
		err = a.fire(evt14, &releaseRP{})
		if err == nil {
			a.log.Info("dicom association released", "instances", a.instances, "bytes", a.bytes, "took", time.Since(a.started).Round(time.Millisecond))
		}
	case sta3, sta6:
		a.fire(evt15, &abort{abortSourceUser, abortNotSpecified})
		a.log.Warn("dicom association aborted", "err", err, "instances", a.instances, "bytes", a.bytes)
		err = nil
	}
	if err != nil {
		level := slog.LevelWarn
		if a.callingAE == "" {
			// No association was requested: a port scan or a load
			// balancer's health check, not worth a warning each.
			level = slog.LevelDebug
		}
		a.log.Log(context.Background(), level, "dicom association ended", "state", a.state.String(), "err", err)
	}
	// Sta13: PDUs are ignored until the caller closes or ARTIM expires,
	// one deadline for all of them so that a caller sending on cannot keep
	// the association alive.
	deadline := time.Now().Add(a.s.cfg.ARTIMTimeout)
	if a.desync && a.state == sta13 {
		// The bytes after a PDU that could not be decoded are not PDUs:
		// drop them until the caller closes, rather than answering each
		// with another A-ABORT.
		a.setReadDeadline(deadline)
		io.Copy(io.Discard, a.br)
		a.state = sta1
		return
	}
	for a.state == sta13 {
		if _, err := a.read(deadline); err != nil && a.state == sta13 {
			a.conn.Close()
			return
		}
	}
}

// errReleased: the caller asked to release the association (Sta8).
var errReleased = errors.New("association released")

// errPeerAborted: the caller sent an A-ABORT.
var errPeerAborted = errors.New("aborted by the caller")

// nextPDV returns the next PDV, reading P-DATA-TF PDUs as needed. Any other
// PDU ends the association: a release request (Sta8), an abort (Sta1) or a
// protocol error (Sta13).
func (a *assoc) nextPDV() (pdv, error) {
	for len(a.pending) == 0 {
		p, err := a.read(time.Now().Add(a.s.cfg.IdleTimeout))
		if err != nil {
			return pdv{}, err
		}
		switch a.state {
		case sta6:
			if pd, ok := p.(*pdataTF); ok {
				a.pending = pd.PDVs
				continue
			}
		case sta8:
			return pdv{}, errReleased
		case sta1:
			if ab, ok := p.(*abort); ok {
				return pdv{}, fmt.Errorf("%w (source %d, reason %d)", errPeerAborted, ab.Source, ab.Reason)
			}
		}
		return pdv{}, fmt.Errorf("unexpected PDU type 0x%02x", p.pduType())
	}
	v := a.pending[0]
	a.pending = a.pending[1:]
	if _, ok := a.syntax[v.ContextID]; !ok {
		return v, fmt.Errorf("PDV on presentation context %d, which was not accepted", v.ContextID)
	}
	return v, nil
}

// serve runs DIMSE messages until the association ends; it returns why
// (errReleased for a release).
func (a *assoc) serve(ctx context.Context) error {
	var cmd []byte
	for {
		// A command set: command PDVs on one context up to the last.
		cmd = cmd[:0]
		first, err := a.nextPDV()
		if err != nil {
			if errors.Is(err, errReleased) {
				// The sender is done: answer its release once what it
				// sent is in the spool, not only in the journal.
				if j, ok := a.s.cfg.Store.(journaled); ok && a.instances > 0 {
					j.settle(ctx)
				}
				return nil
			}
			return err
		}
		id := first.ContextID
		for v := first; ; {
			if !v.Command || v.ContextID != id {
				return fmt.Errorf("data PDV or a PDV of another context inside a command set")
			}
			if len(cmd)+len(v.Data) > maxCommandSet {
				return fmt.Errorf("command set longer than %d bytes", maxCommandSet)
			}
			cmd = append(cmd, v.Data...)
			if v.Last {
				break
			}
			if v, err = a.nextPDV(); err != nil {
				return err
			}
		}
		c, err := decodeCommand(cmd)
		if err != nil {
			return err
		}
		switch c.Field {
		case cEchoRQ:
			if c.HasDataSet {
				return errors.New("C-ECHO-RQ with a data set")
			}
			err = a.respond(id, response{Field: cEchoRSP, RespondingTo: c.MessageID, SOPClassUID: VerificationSOPClass, Status: StatusSuccess})
		case cStoreRQ:
			err = a.cStore(ctx, id, c)
		case cCancelRQ:
			// C-CANCEL applies to C-FIND, C-GET and C-MOVE, which this
			// server does not offer: nothing to cancel.
		default:
			if c.HasDataSet {
				if _, err := io.Copy(io.Discard, &dataReader{a: a, id: id}); err != nil {
					return err
				}
			}
			a.log.Warn("dicom: unsupported command", "command_field", fmt.Sprintf("0x%04x", c.Field))
			err = a.respond(id, response{Field: c.Field | 0x8000, RespondingTo: c.MessageID, SOPClassUID: c.SOPClassUID, Status: StatusUnrecognizedOperation})
		}
		if err != nil {
			return err
		}
	}
}

// cStore receives one C-STORE-RQ's data set into the Store and answers.
func (a *assoc) cStore(ctx context.Context, id byte, c command) error {
	if !c.HasDataSet {
		return errors.New("C-STORE-RQ without a data set")
	}
	in := Instance{
		CallingAE:         a.callingAE,
		CalledAE:          a.calledAE,
		Remote:            a.conn.RemoteAddr(),
		SOPClassUID:       c.SOPClassUID,
		SOPInstanceUID:    c.SOPInstanceUID,
		TransferSyntaxUID: a.syntax[id],
	}
	data := &dataReader{a: a, id: id}
	var status uint16
	var serr error
	switch {
	case c.SOPClassUID != a.abstract[id]:
		status = StatusSOPClassNotSupported
		serr = fmt.Errorf("SOP class %s on a context negotiated for %s", c.SOPClassUID, a.abstract[id])
	case !validUID(c.SOPInstanceUID):
		status = StatusCannotUnderstand
		serr = fmt.Errorf("SOP instance UID %q is not a UID", c.SOPInstanceUID)
	default:
		serr = a.s.cfg.Store.Store(ctx, in, data)
		status = statusOf(serr)
	}
	if data.err != nil {
		// The association failed under the store: no answer can go out,
		// and the store kept nothing (it saw the read error).
		a.log.Warn("dicom: instance not stored, the association failed while it arrived", "sop_instance_uid", c.SOPInstanceUID, "bytes", data.n)
		return data.err
	}
	if _, err := io.Copy(io.Discard, data); err != nil {
		return err
	}
	if serr != nil {
		a.log.Warn("dicom: instance not stored", "sop_instance_uid", c.SOPInstanceUID, "status", fmt.Sprintf("0x%04X", status), "err", serr)
	} else {
		a.s.instances.Add(1)
		a.s.bytes.Add(data.n)
		a.s.count(a.callingAE, false, func(st *Stats) { st.Instances++; st.Bytes += data.n })
		a.instances++
		a.bytes += data.n
	}
	rsp := response{Field: cStoreRSP, RespondingTo: c.MessageID, SOPClassUID: c.SOPClassUID, SOPInstanceUID: c.SOPInstanceUID, Status: status}
	if serr != nil {
		rsp.ErrorComment = commentOf(serr)
	}
	return a.respond(id, rsp)
}

// respond sends a command set on context id, split into PDUs no longer
// than the caller accepts.
func (a *assoc) respond(id byte, r response) error {
	b := r.encode()
	room := len(b)
	if a.peerMax != 0 {
		room = max(int(a.peerMax)-6, 1) // 6: the PDV's length, context ID and header
	}
	for len(b) > 0 {
		n := min(room, len(b))
		p := &pdataTF{PDVs: []pdv{{ContextID: id, Command: true, Last: n == len(b), Data: b[:n]}}}
		if err := a.fire(evt9, p); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// dataReader reads a data set's PDVs off the association as its reader
// asks for them: only one PDU is ever held in memory.
type dataReader struct {
	a    *assoc
	id   byte
	cur  []byte
	last bool  // the last fragment has been taken
	err  error // the association failed
	n    int64
}

func (d *dataReader) fill() bool {
	for len(d.cur) == 0 {
		if d.last || d.err != nil {
			return false
		}
		v, err := d.a.nextPDV()
		if err == nil && (v.Command || v.ContextID != d.id) {
			err = errors.New("command PDV or a PDV of another context inside a data set")
		}
		if err != nil {
			d.err = fmt.Errorf("receive data set: %w", err)
			return false
		}
		d.cur, d.last = v.Data, v.Last
		d.n += int64(len(v.Data))
	}
	return true
}

func (d *dataReader) Read(p []byte) (int, error) {
	if !d.fill() {
		if d.err != nil {
			return 0, d.err
		}
		return 0, io.EOF
	}
	n := copy(p, d.cur)
	d.cur = d.cur[n:]
	return n, nil
}

// WriteTo writes the fragments straight from the PDU buffer, sparing
// io.Copy a copy.
func (d *dataReader) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for d.fill() {
		m, err := w.Write(d.cur)
		n += int64(m)
		d.cur = d.cur[m:]
		if err != nil {
			return n, err
		}
	}
	return n, d.err
}
