package dimse

import (
	"bufio"
	"errors"
	"net"
	"testing"
	"time"
)

// peer is a minimal association requestor for the tests that need what
// dcmtk will not do: cut a data set short, send oversized PDUs, fall idle.
type peer struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

func dialPeer(t *testing.T, addr string) *peer {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	return &peer{t: t, conn: conn, br: bufio.NewReader(conn)}
}

func (p *peer) send(q pdu) {
	p.t.Helper()
	if _, err := p.conn.Write(q.appendTo(nil)); err != nil {
		p.t.Fatalf("send PDU type 0x%02x: %v", q.pduType(), err)
	}
}

// recv reads one PDU; a closed connection is (nil, io.EOF).
func (p *peer) recv() (pdu, error) {
	q, _, err := readPDU(p.br, nil, 1<<24)
	return q, err
}

func (p *peer) mustRecv() pdu {
	p.t.Helper()
	q, err := p.recv()
	if err != nil {
		p.t.Fatalf("receive: %v", err)
	}
	return q
}

// associateRQ is a request from SCANNER to GCINGEST proposing contexts.
func associateRQ(maxPDU uint32, contexts ...presentationRQ) *associate {
	return &associate{
		ProtocolVersion:    1,
		CalledAE:           "GCINGEST",
		CallingAE:          "SCANNER",
		ApplicationContext: applicationContext,
		Contexts:           contexts,
		MaxPDULength:       maxPDU,
		ImplementationUID:  "1.2.3.4",
		ImplementationVer:  "TEST",
	}
}

// standardContexts are context 1 for CT in explicit VR LE and context 3 for
// Verification.
var standardContexts = []presentationRQ{
	{ID: 1, AbstractSyntax: ctImageStorage, TransferSyntaxes: []string{ExplicitVRLittleEndian}},
	{ID: 3, AbstractSyntax: VerificationSOPClass, TransferSyntaxes: []string{ImplicitVRLittleEndian}},
}

// associate sends rq and returns the AC, failing on anything else.
func (p *peer) associate(rq *associate) *associate {
	p.t.Helper()
	p.send(rq)
	q := p.mustRecv()
	ac, ok := q.(*associate)
	if !ok || !ac.ac {
		p.t.Fatalf("got %T %+v, want an A-ASSOCIATE-AC", q, q)
	}
	return ac
}

// sendCommand sends a command set in one PDV.
func (p *peer) sendCommand(id byte, r request) {
	p.send(&pdataTF{PDVs: []pdv{{ContextID: id, Command: true, Last: true, Data: r.encode()}}})
}

// sendData sends a data set in fragments of frag bytes, one PDU each.
func (p *peer) sendData(id byte, data []byte, frag int) {
	for len(data) > 0 {
		n := min(frag, len(data))
		p.send(&pdataTF{PDVs: []pdv{{ContextID: id, Last: n == len(data), Data: data[:n]}}})
		data = data[n:]
	}
}

// response reads a whole command set answered on context id and returns
// its command field and status, and the sizes of the PDUs it came in.
func (p *peer) response() (field, status uint16, sizes []int) {
	p.t.Helper()
	var cmd []byte
	for {
		q := p.mustRecv()
		pd, ok := q.(*pdataTF)
		if !ok {
			p.t.Fatalf("got %T %+v, want a P-DATA-TF", q, q)
		}
		sizes = append(sizes, len(pd.appendTo(nil))-pduHeaderLen)
		last := false
		for _, v := range pd.PDVs {
			if !v.Command {
				p.t.Fatalf("data PDV in a response")
			}
			cmd = append(cmd, v.Data...)
			last = v.Last
		}
		if last {
			break
		}
	}
	field, status, err := decodeResponse(cmd)
	if err != nil {
		p.t.Fatal(err)
	}
	return field, status, sizes
}

// store sends one C-STORE on context 1 and returns the status.
func (p *peer) store(msgID uint16, ti testInstance, frag int) uint16 {
	p.t.Helper()
	p.sendCommand(1, request{Field: cStoreRQ, MessageID: msgID, SOPClassUID: ctImageStorage, SOPInstanceUID: ti.sop, HasDataSet: true})
	p.sendData(1, ti.dataSet(), frag)
	field, status, _ := p.response()
	if field != cStoreRSP {
		p.t.Fatalf("response command field 0x%04x, want C-STORE-RSP", field)
	}
	return status
}

// release releases the association and waits for the server to close.
func (p *peer) release() {
	p.t.Helper()
	p.send(&releaseRQ{})
	if q := p.mustRecv(); q.pduType() != typeReleaseRP {
		p.t.Fatalf("got %T, want A-RELEASE-RP", q)
	}
	p.conn.Close()
}

// waitClosed reads what the server sends until it closes the connection
// or sends a PDU after which a requestor closes it (an A-ASSOCIATE-RJ, an
// A-ABORT, an A-RELEASE-RP; PS3.8 AE-4, AA-3, AR-3), and returns what it
// read.
func (p *peer) waitClosed() []pdu {
	p.t.Helper()
	var got []pdu
	defer p.conn.Close()
	for {
		q, err := p.recv()
		if err != nil {
			var pe *protocolError
			if errors.As(err, &pe) {
				p.t.Fatalf("server sent an invalid PDU: %v", err)
			}
			return got
		}
		got = append(got, q)
		switch q.pduType() {
		case typeAssociateRJ, typeAbort, typeReleaseRP:
			return got
		}
	}
}
