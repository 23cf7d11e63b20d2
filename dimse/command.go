package dimse

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Command set elements (PS3.7 §E.1), group 0000, always implicit VR little
// endian.
const (
	tagCommandGroupLength    uint32 = 0x00000000
	tagAffectedSOPClassUID   uint32 = 0x00000002
	tagCommandField          uint32 = 0x00000100
	tagMessageID             uint32 = 0x00000110
	tagMessageIDRespondedTo  uint32 = 0x00000120
	tagPriority              uint32 = 0x00000700
	tagCommandDataSetType    uint32 = 0x00000800
	tagStatus                uint32 = 0x00000900
	tagErrorComment          uint32 = 0x00000902
	tagAffectedSOPInstance   uint32 = 0x00001000
	tagMoveOriginatorAE      uint32 = 0x00001030
	tagMoveOriginatorMessage uint32 = 0x00001031
)

// Command fields (PS3.7 §E.1).
const (
	cStoreRQ  uint16 = 0x0001
	cStoreRSP uint16 = 0x8001
	cEchoRQ   uint16 = 0x0030
	cEchoRSP  uint16 = 0x8030
	cCancelRQ uint16 = 0x0FFF
)

// noDataSet is the CommandDataSetType that says no data set follows.
const noDataSet uint16 = 0x0101

// Status codes (PS3.7 Annex C, PS3.4 §B.2.3).
const (
	// StatusSuccess: the instance is stored.
	StatusSuccess uint16 = 0x0000
	// StatusOutOfResources: the instance could not be stored (a full disk,
	// a write error); the sender may try again.
	StatusOutOfResources uint16 = 0xA700
	// StatusDataSetMismatch: the data set does not match the SOP class.
	StatusDataSetMismatch uint16 = 0xA900
	// StatusCannotUnderstand: the data set cannot be parsed.
	StatusCannotUnderstand uint16 = 0xC000
	// StatusSOPClassNotSupported: the command's SOP class is not the one
	// its presentation context negotiated.
	StatusSOPClassNotSupported uint16 = 0x0122
	// StatusUnrecognizedOperation: a command this server does not offer.
	StatusUnrecognizedOperation uint16 = 0x0211
	// StatusDuplicateSOPInstance: the spool holds, at this instance's
	// place (calling AE, study, series, SOP Instance UID), another
	// instance with other content (ErrConflictingInstance).
	//
	// Why 0111 "Duplicate SOP Instance" (PS3.7 Annex C.4): it says what
	// happened, and SCUs read it as a failure: it is neither success
	// (0000), nor a warning (Bxxx, 0107, 0116), nor pending (FFxx), which
	// is all dcmtk's storescu lets pass (3.6.7 prints "Received Store
	// Response (Unknown Status: 0x111)", sends no more by default, and
	// exits 1; TestStorescuConflict), and pynetdicom lists it among
	// failures. PS3.7 defines it for N-CREATE, and lists no
	// instance-level conflict for C-STORE; storage's own codes (PS3.4
	// Annex B.2.3) fit worse: A7xx "Refused: Out of Resources" is
	// transient, so senders retry it, in vain, for ever; A9xx says the
	// data set does not match its SOP class, and Cxxx "Cannot understand"
	// that it could not be read, both of which send an operator to the
	// file's encoding rather than to the sender that reused a UID. The
	// response's Error Comment says it in words.
	StatusDuplicateSOPInstance uint16 = 0x0111
)

// maxCommandSet bounds a command set: real ones are a few hundred bytes.
const maxCommandSet = 16 << 10

// command is a decoded command set: the elements this server reads.
type command struct {
	Field            uint16
	MessageID        uint16
	SOPClassUID      string
	SOPInstanceUID   string
	HasDataSet       bool
	MoveOriginatorAE string
}

// decodeCommand reads an implicit VR little endian command set. Unknown
// elements are skipped; a required one missing is an error.
func decodeCommand(b []byte) (command, error) {
	var c command
	var seen struct{ field, id, dst bool }
	for len(b) > 0 {
		if len(b) < 8 {
			return c, fmt.Errorf("command set: element header cut short")
		}
		tag := uint32(binary.LittleEndian.Uint16(b))<<16 | uint32(binary.LittleEndian.Uint16(b[2:]))
		n := binary.LittleEndian.Uint32(b[4:])
		if tag>>16 != 0 {
			return c, fmt.Errorf("command set: element (%04x,%04x) outside group 0000", tag>>16, tag&0xffff)
		}
		if uint64(n) > uint64(len(b)-8) {
			return c, fmt.Errorf("command set: element (0000,%04x) of %d bytes in %d", tag&0xffff, n, len(b)-8)
		}
		v := b[8 : 8+n]
		b = b[8+n:]
		us := func() (uint16, error) {
			if len(v) != 2 {
				return 0, fmt.Errorf("command set: element (0000,%04x) of %d bytes, want 2", tag&0xffff, len(v))
			}
			return binary.LittleEndian.Uint16(v), nil
		}
		var err error
		switch tag {
		case tagCommandField:
			c.Field, err = us()
			seen.field = true
		case tagMessageID:
			c.MessageID, err = us()
			seen.id = true
		case tagCommandDataSetType:
			var t uint16
			t, err = us()
			c.HasDataSet = t != noDataSet
			seen.dst = true
		case tagAffectedSOPClassUID:
			c.SOPClassUID = uid(v)
		case tagAffectedSOPInstance:
			c.SOPInstanceUID = uid(v)
		case tagMoveOriginatorAE:
			c.MoveOriginatorAE = strings.Trim(string(v), " \x00")
		}
		if err != nil {
			return c, err
		}
	}
	switch {
	case !seen.field:
		return c, fmt.Errorf("command set without CommandField (0000,0100)")
	case !seen.dst:
		return c, fmt.Errorf("command set without CommandDataSetType (0000,0800)")
	case !seen.id && c.Field != cCancelRQ:
		return c, fmt.Errorf("command set without MessageID (0000,0110)")
	}
	return c, nil
}

// response is a C-STORE-RSP or C-ECHO-RSP.
type response struct {
	Field          uint16
	RespondingTo   uint16
	SOPClassUID    string
	SOPInstanceUID string // C-STORE only
	Status         uint16
	ErrorComment   string // for a failure status; at most 64 characters
}

// encode writes the response as an implicit VR little endian command set,
// elements in ascending tag order, with its group length first.
func (r response) encode() []byte {
	var b []byte
	b = appendElement(b, tagAffectedSOPClassUID, padUID(r.SOPClassUID))
	b = appendElement(b, tagCommandField, le16(r.Field))
	b = appendElement(b, tagMessageIDRespondedTo, le16(r.RespondingTo))
	b = appendElement(b, tagCommandDataSetType, le16(noDataSet))
	b = appendElement(b, tagStatus, le16(r.Status))
	if r.ErrorComment != "" {
		c := r.ErrorComment
		if len(c) > 64 {
			c = c[:64]
		}
		if len(c)%2 == 1 {
			c += " "
		}
		b = appendElement(b, tagErrorComment, []byte(c))
	}
	if r.SOPInstanceUID != "" {
		b = appendElement(b, tagAffectedSOPInstance, padUID(r.SOPInstanceUID))
	}
	out := appendElement(nil, tagCommandGroupLength, binary.LittleEndian.AppendUint32(nil, uint32(len(b))))
	return append(out, b...)
}

// request is a C-ECHO-RQ (Echo sends it) or a C-STORE-RQ (the tests send
// it).
type request struct {
	Field          uint16
	MessageID      uint16
	SOPClassUID    string
	SOPInstanceUID string
	HasDataSet     bool
}

func (r request) encode() []byte {
	var b []byte
	b = appendElement(b, tagAffectedSOPClassUID, padUID(r.SOPClassUID))
	b = appendElement(b, tagCommandField, le16(r.Field))
	b = appendElement(b, tagMessageID, le16(r.MessageID))
	if r.Field == cStoreRQ {
		b = appendElement(b, tagPriority, le16(0))
	}
	dst := noDataSet
	if r.HasDataSet {
		dst = 0
	}
	b = appendElement(b, tagCommandDataSetType, le16(dst))
	if r.SOPInstanceUID != "" {
		b = appendElement(b, tagAffectedSOPInstance, padUID(r.SOPInstanceUID))
	}
	out := appendElement(nil, tagCommandGroupLength, binary.LittleEndian.AppendUint32(nil, uint32(len(b))))
	return append(out, b...)
}

// decodeResponse reads the command field and status of a response.
func decodeResponse(b []byte) (field, status uint16, err error) {
	for len(b) >= 8 {
		tag := uint32(binary.LittleEndian.Uint16(b))<<16 | uint32(binary.LittleEndian.Uint16(b[2:]))
		n := binary.LittleEndian.Uint32(b[4:])
		if uint64(n) > uint64(len(b)-8) {
			return 0, 0, fmt.Errorf("response cut short")
		}
		v := b[8 : 8+n]
		switch {
		case tag == tagCommandField && n == 2:
			field = binary.LittleEndian.Uint16(v)
		case tag == tagStatus && n == 2:
			status = binary.LittleEndian.Uint16(v)
		}
		b = b[8+n:]
	}
	return field, status, nil
}

func appendElement(b []byte, tag uint32, v []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(tag>>16))
	b = binary.LittleEndian.AppendUint16(b, uint16(tag))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }

// padUID pads a UID with a NUL to an even length (PS3.5 §9.1).
func padUID(u string) []byte {
	b := []byte(u)
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	return b
}
