package dimse

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

// ImplementationClassUID names gcingest's DICOM implementation in the
// A-ASSOCIATE-AC and in the meta group of the files it writes. A fixed
// 2.25 (UUID-derived, PS3.5 §B.2) UID: gcingest has no registered root.
const ImplementationClassUID = "2.25.134550127204433729155049120597711000598"

// ImplementationVersionName goes with ImplementationClassUID (at most 16
// characters).
const ImplementationVersionName = "GCINGEST_DIMSE1"

// Instance describes one received C-STORE: who sent it and what the
// command says it is. The data set itself is passed to Store as a stream.
type Instance struct {
	CallingAE string
	CalledAE  string
	Remote    net.Addr
	// SOPClassUID and SOPInstanceUID are the command's Affected SOP Class
	// and Instance UIDs (PS3.7 §9.1.1.1), which PS3.10 puts in the meta group.
	SOPClassUID    string
	SOPInstanceUID string
	// TransferSyntaxUID is the syntax negotiated for the presentation
	// context the data set arrived on: the encoding of its bytes.
	TransferSyntaxUID string
}

// Store receives the instances of C-STORE requests. The server calls Store
// once per request, from the association's goroutine (several associations
// call it at once), and answers the sender after it returns: success only
// for a nil error, so Store must return only once the instance is durable.
//
// dataset yields the data set exactly as it arrived, in
// TransferSyntaxUID, without preamble or meta group; it reads from the
// network as Store reads. Store should read it to its end; what it leaves
// is drained. A read error from dataset means the association failed: the
// instance must not be kept.
type Store interface {
	Store(ctx context.Context, in Instance, dataset io.Reader) error
}

// ErrInvalidDataSet marks a Store error caused by the data set itself (it
// cannot be parsed, or lacks the UIDs it must have). The sender is told
// "cannot understand" (C000) rather than "out of resources" (A700), since
// sending the same bytes again would fail again.
var ErrInvalidDataSet = errors.New("invalid data set")

// ErrSOPClassMismatch marks a Store error for a data set whose SOP Class
// UID (0008,0016) is not the one its C-STORE command names: "data set does
// not match SOP class" (A900). Stored anyway, its file would have a meta
// group that contradicts its data set, which the de-identifier refuses.
var ErrSOPClassMismatch = errors.New("data set does not match the SOP class of its command")

// ErrConflictingInstance marks a Store error for an instance whose place
// is taken by another with other content: the same calling AE, Study,
// Series and SOP Instance UIDs, other bytes. The sender is told "duplicate
// SOP instance" (0111), a failure: the instance is not stored, and the
// first one is kept. (The same bytes again are a resend, answered
// success.)
var ErrConflictingInstance = errors.New("another instance with the same UIDs and other content is stored already")

// statusOf maps a Store error to the C-STORE status answered.
func statusOf(err error) uint16 {
	switch {
	case err == nil:
		return StatusSuccess
	case errors.Is(err, ErrConflictingInstance):
		return StatusDuplicateSOPInstance
	case errors.Is(err, ErrSOPClassMismatch):
		return StatusDataSetMismatch
	case errors.Is(err, ErrInvalidDataSet):
		return StatusCannotUnderstand
	}
	return StatusOutOfResources
}

// commentOf is the Error Comment (0000,0902) of the response to a Store
// error (at most 64 characters): what the sender's operator reads.
func commentOf(err error) string {
	if errors.Is(err, ErrConflictingInstance) {
		return "not stored: SOP Instance UID stored already, other content"
	}
	return "not stored"
}

// WriteFileMeta writes what precedes the data set in a DICOM Part 10 file
// (PS3.10 §7.1): the 128-byte preamble, "DICM", and the File Meta
// Information group (explicit VR little endian, PS3.10 §7.1) naming in's
// SOP class and instance, its transfer syntax, this implementation, and the
// calling AE title as the source.
func WriteFileMeta(w io.Writer, in Instance) (int64, error) {
	var m []byte
	m = appendMeta(m, 0x0001, "OB", []byte{0, 1})
	m = appendMeta(m, 0x0002, "UI", padUID(in.SOPClassUID))
	m = appendMeta(m, 0x0003, "UI", padUID(in.SOPInstanceUID))
	m = appendMeta(m, 0x0010, "UI", padUID(in.TransferSyntaxUID))
	m = appendMeta(m, 0x0012, "UI", padUID(ImplementationClassUID))
	m = appendMeta(m, 0x0013, "SH", padText(ImplementationVersionName))
	if in.CallingAE != "" {
		m = appendMeta(m, 0x0016, "AE", padText(in.CallingAE))
	}
	b := make([]byte, 128, 128+4+12+len(m))
	b = append(b, "DICM"...)
	b = appendMeta(b, 0x0000, "UL", binary.LittleEndian.AppendUint32(nil, uint32(len(m))))
	b = append(b, m...)
	n, err := w.Write(b)
	if err != nil {
		return int64(n), fmt.Errorf("write file meta of %s: %w", in.SOPInstanceUID, err)
	}
	return int64(n), nil
}

// appendMeta appends one explicit VR little endian element of group 0002.
func appendMeta(b []byte, elem uint16, vr string, v []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, 0x0002)
	b = binary.LittleEndian.AppendUint16(b, elem)
	b = append(b, vr...)
	if vr == "OB" {
		b = append(b, 0, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	} else {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	}
	return append(b, v...)
}

// padText pads a text value with a space to an even length.
func padText(s string) []byte {
	if len(s)%2 == 1 {
		s += " "
	}
	return []byte(s)
}
