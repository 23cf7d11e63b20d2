package dimse

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// PDU types (PS3.8 §9.3.1).
const (
	typeAssociateRQ byte = 0x01
	typeAssociateAC byte = 0x02
	typeAssociateRJ byte = 0x03
	typePDataTF     byte = 0x04
	typeReleaseRQ   byte = 0x05
	typeReleaseRP   byte = 0x06
	typeAbort       byte = 0x07
)

// Item types inside A-ASSOCIATE-RQ/AC (PS3.8 §9.3.2, §9.3.3, Annex D).
const (
	itemApplicationContext byte = 0x10
	itemPresentationRQ     byte = 0x20
	itemPresentationAC     byte = 0x21
	itemAbstractSyntax     byte = 0x30
	itemTransferSyntax     byte = 0x40
	itemUserInformation    byte = 0x50
	itemMaxLength          byte = 0x51
	itemImplementationUID  byte = 0x52
	itemImplementationVer  byte = 0x55
)

// ApplicationContext is the DICOM application context name (PS3.7 Annex A),
// the only one an association may propose.
const applicationContext = "1.2.840.10008.3.1.1.1"

// pduHeaderLen is the type, a reserved byte and the 32-bit length.
const pduHeaderLen = 6

// maxAssociatePDU bounds the A-ASSOCIATE-RQ a caller may send before any
// max PDU length is negotiated. The largest real ones (dcmtk's storescu
// proposing 128 presentation contexts with many transfer syntaxes each) stay
// well below 64 KiB.
const maxAssociatePDU = 256 << 10

// Presentation context results (PS3.8 §9.3.3.2).
const (
	pcAcceptance              byte = 0
	pcUserRejection           byte = 1
	pcAbstractNotSupported    byte = 3
	pcTransferNotSupported    byte = 4
	maxPresentationContextsRQ      = 128 // context IDs are the odd numbers 1..255
)

// A-ASSOCIATE-RJ results, sources and reasons (PS3.8 §9.3.4).
const (
	rjPermanent byte = 1
	rjTransient byte = 2

	rjSourceUser         byte = 1
	rjSourceACSE         byte = 2
	rjSourcePresentation byte = 3

	rjUserNoReason             byte = 1
	rjUserAppContext           byte = 2
	rjUserCallingAENotAllowed  byte = 3
	rjUserCalledAENotKnown     byte = 7
	rjACSEProtocolVersion      byte = 2
	rjPresentationLimitReached byte = 2
)

// A-ABORT sources and reasons (PS3.8 §9.3.8).
const (
	abortSourceUser     byte = 0
	abortSourceProvider byte = 2

	abortNotSpecified     byte = 0
	abortUnrecognizedPDU  byte = 1
	abortUnexpectedPDU    byte = 2
	abortInvalidParameter byte = 6
)

// pdu is any decoded protocol data unit.
type pdu interface {
	pduType() byte
	// appendTo appends the whole PDU, header included, to b.
	appendTo(b []byte) []byte
}

// associate is an A-ASSOCIATE-RQ (Contexts) or -AC (Results): the two share
// their layout.
type associate struct {
	ac                 bool
	ProtocolVersion    uint16
	CalledAE           string
	CallingAE          string
	ApplicationContext string
	Contexts           []presentationRQ
	Results            []presentationAC
	MaxPDULength       uint32 // 0: no limit
	ImplementationUID  string
	ImplementationVer  string
}

// presentationRQ is one proposed presentation context.
type presentationRQ struct {
	ID               byte
	AbstractSyntax   string
	TransferSyntaxes []string
}

// presentationAC is the answer to one proposed presentation context.
type presentationAC struct {
	ID             byte
	Result         byte
	TransferSyntax string
}

type associateRJ struct{ Result, Source, Reason byte }

// pdataTF is a P-DATA-TF PDU. The PDV values alias the buffer the PDU was
// read into: they are valid until the next read.
type pdataTF struct{ PDVs []pdv }

// pdv is one presentation data value: a fragment of a command or data set.
type pdv struct {
	ContextID byte
	Command   bool // else data set
	Last      bool
	Data      []byte
}

type releaseRQ struct{}
type releaseRP struct{}
type abort struct{ Source, Reason byte }

func (p *associate) pduType() byte {
	if p.ac {
		return typeAssociateAC
	}
	return typeAssociateRQ
}
func (*associateRJ) pduType() byte { return typeAssociateRJ }
func (*pdataTF) pduType() byte     { return typePDataTF }
func (*releaseRQ) pduType() byte   { return typeReleaseRQ }
func (*releaseRP) pduType() byte   { return typeReleaseRP }
func (*abort) pduType() byte       { return typeAbort }

// protocolError is a PDU that breaks PS3.8; the association is aborted with
// Reason (an A-ABORT reason of the service provider).
type protocolError struct {
	Reason byte
	Msg    string
}

func (e *protocolError) Error() string { return "dicom upper layer: " + e.Msg }

func invalid(format string, args ...any) error {
	return &protocolError{Reason: abortInvalidParameter, Msg: fmt.Sprintf(format, args...)}
}

// readPDU reads one PDU from r. buf is reused for P-DATA-TF PDUs (whose
// PDVs then alias it) and grown as bytes actually arrive, never beyond max
// (the negotiated max PDU length; A-ASSOCIATE PDUs may reach
// maxAssociatePDU), so a length read from the wire allocates nothing by
// itself. It returns the grown buffer for the next call. max is never 0:
// the server always announces a limit.
func readPDU(r io.Reader, buf []byte, max uint32) (pdu, []byte, error) {
	var h [pduHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, buf, err
	}
	typ, n := h[0], binary.BigEndian.Uint32(h[2:])
	limit := max
	switch typ {
	case typeAssociateRQ, typeAssociateAC:
		limit = maxAssociatePDU
	case typePDataTF:
	case typeAssociateRJ, typeReleaseRQ, typeReleaseRP, typeAbort:
		limit = 4
	default:
		return nil, buf, &protocolError{Reason: abortUnrecognizedPDU, Msg: fmt.Sprintf("unknown PDU type 0x%02x", typ)}
	}
	if n > limit {
		return nil, buf, invalid("PDU type 0x%02x of %d bytes exceeds the limit of %d", typ, n, limit)
	}
	body, err := readBody(r, buf[:0], n)
	if err != nil {
		return nil, body, err
	}
	p, err := decodePDU(typ, body)
	return p, body, err
}

// readBody reads n bytes into buf, growing it by at most 64 KiB beyond what
// has arrived, so that a peer claiming a large PDU and sending little costs
// little memory.
func readBody(r io.Reader, buf []byte, n uint32) ([]byte, error) {
	const step = 64 << 10
	for uint32(len(buf)) < n {
		want := min(n-uint32(len(buf)), step)
		if cap(buf)-len(buf) < int(want) {
			nb := make([]byte, len(buf), len(buf)+int(want)+len(buf)/2)
			copy(nb, buf)
			buf = nb
		}
		m, err := io.ReadFull(r, buf[len(buf):len(buf)+int(want)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// decodePDU decodes the body of a PDU of type typ. It never panics and
// never allocates more than body's size.
func decodePDU(typ byte, body []byte) (pdu, error) {
	switch typ {
	case typeAssociateRQ, typeAssociateAC:
		return decodeAssociate(typ == typeAssociateAC, body)
	case typeAssociateRJ:
		if len(body) != 4 {
			return nil, invalid("A-ASSOCIATE-RJ of %d bytes", len(body))
		}
		return &associateRJ{Result: body[1], Source: body[2], Reason: body[3]}, nil
	case typePDataTF:
		return decodePData(body)
	case typeReleaseRQ, typeReleaseRP:
		if len(body) != 4 {
			return nil, invalid("A-RELEASE PDU of %d bytes", len(body))
		}
		if typ == typeReleaseRQ {
			return &releaseRQ{}, nil
		}
		return &releaseRP{}, nil
	case typeAbort:
		if len(body) != 4 {
			return nil, invalid("A-ABORT of %d bytes", len(body))
		}
		return &abort{Source: body[2], Reason: body[3]}, nil
	}
	return nil, &protocolError{Reason: abortUnrecognizedPDU, Msg: fmt.Sprintf("unknown PDU type 0x%02x", typ)}
}

// maxPDVs bounds the PDVs of one P-DATA-TF. PS3.8 sets no limit, but
// senders put one or two in a PDU; a PDU of empty PDVs would otherwise
// cost five times its size in memory.
const maxPDVs = 1024

func decodePData(body []byte) (*pdataTF, error) {
	p := &pdataTF{}
	for len(body) > 0 {
		if len(p.PDVs) == maxPDVs {
			return nil, invalid("P-DATA-TF with more than %d PDVs", maxPDVs)
		}
		if len(body) < 6 {
			return nil, invalid("PDV item cut short (%d bytes)", len(body))
		}
		n := binary.BigEndian.Uint32(body)
		if n < 2 || uint64(n) > uint64(len(body)-4) {
			return nil, invalid("PDV item length %d in %d bytes", n, len(body)-4)
		}
		id, mch := body[4], body[5]
		if id%2 == 0 {
			return nil, invalid("PDV with even presentation context ID %d", id)
		}
		if mch&^3 != 0 {
			return nil, invalid("PDV message control header 0x%02x", mch)
		}
		p.PDVs = append(p.PDVs, pdv{ContextID: id, Command: mch&1 != 0, Last: mch&2 != 0, Data: body[6 : 4+n]})
		body = body[4+n:]
	}
	if len(p.PDVs) == 0 {
		return nil, invalid("P-DATA-TF without a PDV")
	}
	return p, nil
}

// item is one variable item: type and value.
type item struct {
	typ byte
	val []byte
}

// items splits b into variable items with 16-bit lengths (PS3.8 §9.3.2).
func items(b []byte, what string) ([]item, error) {
	var out []item
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, invalid("%s: item header cut short", what)
		}
		n := int(binary.BigEndian.Uint16(b[2:]))
		if n > len(b)-4 {
			return nil, invalid("%s: item 0x%02x of %d bytes in %d", what, b[0], n, len(b)-4)
		}
		out = append(out, item{typ: b[0], val: b[4 : 4+n]})
		b = b[4+n:]
	}
	return out, nil
}

// uid reads a UID value: ASCII, padded with NUL (or, from some peers, a
// space) to an even length.
func uid(b []byte) string {
	return strings.TrimRight(string(b), "\x00 ")
}

// aeTitle reads a 16-byte AE title field: leading and trailing spaces are
// not significant (PS3.5 §6.2, AE).
func aeTitle(b []byte) string {
	return strings.Trim(string(b), " \x00")
}

func decodeAssociate(ac bool, b []byte) (*associate, error) {
	what := "A-ASSOCIATE-RQ"
	if ac {
		what = "A-ASSOCIATE-AC"
	}
	if len(b) < 68 {
		return nil, invalid("%s of %d bytes", what, len(b))
	}
	p := &associate{
		ac:              ac,
		ProtocolVersion: binary.BigEndian.Uint16(b),
		CalledAE:        aeTitle(b[4:20]),
		CallingAE:       aeTitle(b[20:36]),
	}
	its, err := items(b[68:], what)
	if err != nil {
		return nil, err
	}
	for _, it := range its {
		switch it.typ {
		case itemApplicationContext:
			p.ApplicationContext = uid(it.val)
		case itemPresentationRQ:
			if ac {
				return nil, invalid("%s: proposed presentation context", what)
			}
			if len(p.Contexts) == maxPresentationContextsRQ {
				return nil, invalid("%s: more than %d presentation contexts", what, maxPresentationContextsRQ)
			}
			pc, err := decodePresentationRQ(it.val)
			if err != nil {
				return nil, err
			}
			p.Contexts = append(p.Contexts, pc)
		case itemPresentationAC:
			if !ac {
				return nil, invalid("%s: accepted presentation context", what)
			}
			if len(it.val) < 4 {
				return nil, invalid("%s: presentation context item of %d bytes", what, len(it.val))
			}
			pc := presentationAC{ID: it.val[0], Result: it.val[2]}
			subs, err := items(it.val[4:], what)
			if err != nil {
				return nil, err
			}
			for _, s := range subs {
				if s.typ == itemTransferSyntax {
					pc.TransferSyntax = uid(s.val)
				}
			}
			p.Results = append(p.Results, pc)
		case itemUserInformation:
			subs, err := items(it.val, what+" user information")
			if err != nil {
				return nil, err
			}
			for _, s := range subs {
				switch s.typ {
				case itemMaxLength:
					if len(s.val) != 4 {
						return nil, invalid("%s: maximum length item of %d bytes", what, len(s.val))
					}
					p.MaxPDULength = binary.BigEndian.Uint32(s.val)
				case itemImplementationUID:
					p.ImplementationUID = uid(s.val)
				case itemImplementationVer:
					p.ImplementationVer = strings.TrimRight(string(s.val), " \x00")
				}
				// Other sub-items (asynchronous operations, role selection,
				// extended negotiation, user identity) are optional for the
				// acceptor to answer: leaving them out of the AC declines them.
			}
		default:
			// An item of a type this implementation does not know is
			// skipped rather than refused, so that items of a later
			// revision of PS3.8, or a vendor's, do not break the
			// association.
		}
	}
	return p, nil
}

func decodePresentationRQ(b []byte) (presentationRQ, error) {
	if len(b) < 4 {
		return presentationRQ{}, invalid("presentation context item of %d bytes", len(b))
	}
	pc := presentationRQ{ID: b[0]}
	subs, err := items(b[4:], "presentation context")
	if err != nil {
		return pc, err
	}
	for _, s := range subs {
		switch s.typ {
		case itemAbstractSyntax:
			pc.AbstractSyntax = uid(s.val)
		case itemTransferSyntax:
			pc.TransferSyntaxes = append(pc.TransferSyntaxes, uid(s.val))
		default:
			// Skipped, as at the top level.
		}
	}
	return pc, nil
}

// Encoding.

func appendHeader(b []byte, typ byte) ([]byte, int) {
	b = append(b, typ, 0, 0, 0, 0, 0)
	return b, len(b)
}

// finish writes the length of the PDU started at start (the index after
// its header).
func finish(b []byte, start int) []byte {
	binary.BigEndian.PutUint32(b[start-4:], uint32(len(b)-start))
	return b
}

func appendItem(b []byte, typ byte, val []byte) []byte {
	b = append(b, typ, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(val)))
	return append(b, val...)
}

func appendAE(b []byte, ae string) []byte {
	var f [16]byte
	for i := range f {
		f[i] = ' '
	}
	copy(f[:], ae)
	return append(b, f[:]...)
}

func (p *associate) appendTo(b []byte) []byte {
	b, start := appendHeader(b, p.pduType())
	b = binary.BigEndian.AppendUint16(b, p.ProtocolVersion)
	b = append(b, 0, 0)
	b = appendAE(b, p.CalledAE)
	b = appendAE(b, p.CallingAE)
	b = append(b, make([]byte, 32)...)
	b = appendItem(b, itemApplicationContext, []byte(p.ApplicationContext))
	for _, pc := range p.Contexts {
		v := []byte{pc.ID, 0, 0, 0}
		v = appendItem(v, itemAbstractSyntax, []byte(pc.AbstractSyntax))
		for _, ts := range pc.TransferSyntaxes {
			v = appendItem(v, itemTransferSyntax, []byte(ts))
		}
		b = appendItem(b, itemPresentationRQ, v)
	}
	for _, pc := range p.Results {
		v := []byte{pc.ID, 0, pc.Result, 0}
		v = appendItem(v, itemTransferSyntax, []byte(pc.TransferSyntax))
		b = appendItem(b, itemPresentationAC, v)
	}
	var u []byte
	u = appendItem(u, itemMaxLength, binary.BigEndian.AppendUint32(nil, p.MaxPDULength))
	if p.ImplementationUID != "" {
		u = appendItem(u, itemImplementationUID, []byte(p.ImplementationUID))
	}
	if p.ImplementationVer != "" {
		u = appendItem(u, itemImplementationVer, []byte(p.ImplementationVer))
	}
	b = appendItem(b, itemUserInformation, u)
	return finish(b, start)
}

func (p *associateRJ) appendTo(b []byte) []byte {
	b, start := appendHeader(b, typeAssociateRJ)
	b = append(b, 0, p.Result, p.Source, p.Reason)
	return finish(b, start)
}

func (p *pdataTF) appendTo(b []byte) []byte {
	b, start := appendHeader(b, typePDataTF)
	for _, v := range p.PDVs {
		b = binary.BigEndian.AppendUint32(b, uint32(len(v.Data)+2))
		var mch byte
		if v.Command {
			mch |= 1
		}
		if v.Last {
			mch |= 2
		}
		b = append(b, v.ContextID, mch)
		b = append(b, v.Data...)
	}
	return finish(b, start)
}

func (*releaseRQ) appendTo(b []byte) []byte {
	b, start := appendHeader(b, typeReleaseRQ)
	return finish(append(b, 0, 0, 0, 0), start)
}

func (*releaseRP) appendTo(b []byte) []byte {
	b, start := appendHeader(b, typeReleaseRP)
	return finish(append(b, 0, 0, 0, 0), start)
}

func (p *abort) appendTo(b []byte) []byte {
	b, start := appendHeader(b, typeAbort)
	return finish(append(b, 0, 0, p.Source, p.Reason), start)
}
