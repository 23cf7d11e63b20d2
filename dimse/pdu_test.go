package dimse

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

// samplePDUs are one of each PDU kind, also the fuzz seeds.
func samplePDUs() []pdu {
	return []pdu{
		associateRQ(16384, standardContexts...),
		&associate{ac: true, ProtocolVersion: 1, CalledAE: "GCINGEST", CallingAE: "SCANNER", ApplicationContext: applicationContext,
			Results:      []presentationAC{{ID: 1, Result: pcAcceptance, TransferSyntax: ExplicitVRLittleEndian}, {ID: 3, Result: pcAbstractNotSupported, TransferSyntax: ImplicitVRLittleEndian}},
			MaxPDULength: 65536, ImplementationUID: ImplementationClassUID, ImplementationVer: ImplementationVersionName},
		&associateRJ{rjPermanent, rjSourceUser, rjUserCallingAENotAllowed},
		&pdataTF{PDVs: []pdv{
			{ContextID: 1, Command: true, Last: true, Data: request{Field: cStoreRQ, MessageID: 1, SOPClassUID: ctImageStorage, SOPInstanceUID: "1.2.3", HasDataSet: true}.encode()},
			{ContextID: 1, Data: []byte{8, 0, 0x16, 0}},
			{ContextID: 1, Last: true, Data: []byte{}},
		}},
		&releaseRQ{},
		&releaseRP{},
		&abort{abortSourceProvider, abortInvalidParameter},
	}
}

func TestPDURoundTrip(t *testing.T) {
	for _, want := range samplePDUs() {
		b := want.appendTo(nil)
		got, _, err := readPDU(bytes.NewReader(b), nil, 1<<20)
		if err != nil {
			t.Errorf("decode %T: %v", want, err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round trip of %T\n got %+v\nwant %+v", want, got, want)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"unknown type", []byte{0x08, 0, 0, 0, 0, 4, 0, 0, 0, 0}},
		{"abort too long", []byte{0x07, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0}},
		{"P-DATA too long for max", append([]byte{0x04, 0, 0, 0, 0x10, 1}, make([]byte, 16)...)},
		{"PDV longer than PDU", []byte{0x04, 0, 0, 0, 0, 6, 0, 0, 0, 9, 1, 3}},
		{"PDV even context", []byte{0x04, 0, 0, 0, 0, 6, 0, 0, 0, 2, 2, 3}},
		{"PDV bad header bits", []byte{0x04, 0, 0, 0, 0, 6, 0, 0, 0, 2, 1, 7}},
		{"empty P-DATA", []byte{0x04, 0, 0, 0, 0, 0}},
		{"short associate", []byte{0x01, 0, 0, 0, 0, 4, 0, 1, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readPDU(bytes.NewReader(tc.b), nil, 4096)
			var pe *protocolError
			if !errors.As(err, &pe) {
				t.Errorf("got %v, want a protocol error", err)
			}
		})
	}
	// A PDU that announces more than arrives is cut short, and costs no
	// more memory than what arrived.
	_, buf, err := readPDU(bytes.NewReader([]byte{0x01, 0, 0, 3, 0, 0, 0, 1}), nil, 4096)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut associate: got %v, want io.ErrUnexpectedEOF", err)
	}
	if cap(buf) > 64<<10 {
		t.Errorf("cut associate of 2 bytes grew the buffer to %d", cap(buf))
	}
}

// FuzzDecodePDU: whatever arrives, the decoder returns a PDU or an error,
// never panics, and what it decodes encodes back to a PDU that decodes the
// same.
func FuzzDecodePDU(f *testing.F) {
	for _, p := range samplePDUs() {
		f.Add(p.appendTo(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, _, err := readPDU(bytes.NewReader(b), nil, 1<<16)
		if err != nil {
			return
		}
		again, _, err := readPDU(bytes.NewReader(p.appendTo(nil)), nil, 1<<16)
		if err != nil {
			// Re-encoding may not fit (an item over 64 KiB): only a decode
			// error of the encoded form is a bug.
			var pe *protocolError
			if errors.As(err, &pe) && !tooLongToEncode(p) {
				t.Fatalf("re-encoded %T does not decode: %v", p, err)
			}
			return
		}
		if !reflect.DeepEqual(normalize(p), normalize(again)) {
			t.Fatalf("round trip\n got %+v\nwant %+v", again, p)
		}
	})
}

// FuzzDecodeCommand: command sets never panic the decoders (the server's
// of requests, Echo's of responses).
func FuzzDecodeCommand(f *testing.F) {
	f.Add(request{Field: cStoreRQ, MessageID: 1, SOPClassUID: ctImageStorage, SOPInstanceUID: "1.2.3", HasDataSet: true}.encode())
	f.Add(response{Field: cEchoRSP, RespondingTo: 1, SOPClassUID: VerificationSOPClass, ErrorComment: "x"}.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeCommand(b)
		decodeResponse(b)
	})
}

// tooLongToEncode: an AE title over 16 bytes or a UID over 64 KiB cannot
// be encoded as it was decoded; the decoder never produces them, but keep
// the fuzz target honest.
func tooLongToEncode(p pdu) bool {
	a, ok := p.(*associate)
	return ok && (len(a.CalledAE) > 16 || len(a.CallingAE) > 16)
}

// normalize maps what encoding may change without a change of meaning:
// trailing NULs and spaces that the decoder trims, nil vs empty slices.
func normalize(p pdu) pdu {
	if pd, ok := p.(*pdataTF); ok {
		c := &pdataTF{}
		for _, v := range pd.PDVs {
			v.Data = append([]byte{}, v.Data...)
			c.PDVs = append(c.PDVs, v)
		}
		return c
	}
	if a, ok := p.(*associate); ok {
		c := *a
		for i := range c.Contexts {
			if len(c.Contexts[i].TransferSyntaxes) == 0 {
				c.Contexts[i].TransferSyntaxes = nil
			}
		}
		return &c
	}
	return p
}
