package dimse

import (
	"bytes"
	"os"
	"slices"
	"testing"
)

// gcTestSetClass is the SOP class of most of Grand Challenge's DICOM test
// set files: CT Image Storage with 840 changed to 111, no class of PS3.4.
const gcTestSetClass = "1.2.111.10008.5.1.4.1.1.2"

func TestUnknownSOPClass(t *testing.T) {
	for uid, want := range map[string]bool{
		gcTestSetClass:                    true,  // outside the standard's root
		"1.2.111.10008.2.1.4.1.1.2":       true,  // as e2e_dicom_gcsets_test.go spells it
		"1.3.12.2.1107.5.9.1":             true,  // a vendor's private class
		"1.2.840.113619.4.27":             true,  // under 1.2.840, not 1.2.840.10008
		"1.2.840.10008.5.1.4.1.1.999.1":   true,  // a storage class newer than the table
		ctImageStorage:                    false, // known: accepted anyway
		VerificationSOPClass:              false,
		"1.2.840.10008.5.1.4.1.2.2.1":     false, // Study Root Query/Retrieve FIND
		"1.2.840.10008.5.1.4.31":          false, // Modality Worklist FIND
		"1.2.840.10008.5.1.4.1.1.200.1":   false, // CT Defined Procedure Protocol: left out on purpose
		ExplicitVRLittleEndian:            false, // a transfer syntax
		"1.2.840.10008.5.1.4.1.1.2.":      false, // not a UID
		"1.2.111.10008.5.1.4.1.1.2 ":      false,
		"1.2.111..10008":                  false,
		"":                                false,
		"1.2.840.10008.5.1.4.1.1.2.01.x.": false,
	} {
		if got := UnknownSOPClass(uid); got != want {
			t.Errorf("UnknownSOPClass(%q) = %v, want %v", uid, got, want)
		}
	}
}

// TestAcceptUnknownSOPClasses: by default a context for a SOP class not
// in StorageSOPClasses is refused; with AcceptUnknownSOPClasses it is
// accepted in a storage transfer syntax, and its instances are stored as
// any other, while the standard's other services stay refused and
// Verification is as before.
func TestAcceptUnknownSOPClasses(t *testing.T) {
	contexts := []presentationRQ{
		{ID: 1, AbstractSyntax: gcTestSetClass, TransferSyntaxes: []string{ExplicitVRBigEndian, ExplicitVRLittleEndian}},
		{ID: 3, AbstractSyntax: "1.2.840.10008.5.1.4.1.2.2.1", TransferSyntaxes: []string{ImplicitVRLittleEndian}}, // C-FIND
		{ID: 5, AbstractSyntax: "1.3.12.2.1107.5.9.1", TransferSyntaxes: []string{ExplicitVRBigEndian}},
		{ID: 7, AbstractSyntax: VerificationSOPClass, TransferSyntaxes: []string{ImplicitVRLittleEndian}},
		{ID: 9, AbstractSyntax: "1.2.840.10008.5.1.4.1.1.200.1", TransferSyntaxes: []string{ExplicitVRLittleEndian}},
		{ID: 11, AbstractSyntax: "not.a.uid", TransferSyntaxes: []string{ExplicitVRLittleEndian}},
		{ID: 13, AbstractSyntax: ctImageStorage, TransferSyntaxes: []string{ExplicitVRLittleEndian}},
	}
	for _, on := range []bool{false, true} {
		t.Run(map[bool]string{false: "off", true: "on"}[on], func(t *testing.T) { acceptUnknown(t, on, contexts) })
	}
}

func acceptUnknown(t *testing.T, on bool, contexts []presentationRQ) {
	ts := startServer(t, func(c *Config) { c.AcceptUnknownSOPClasses = on })
	p := dialPeer(t, ts.addr)
	ac := p.associate(associateRQ(16<<10, contexts...))
	unknown := pcAbstractNotSupported
	if on {
		unknown = pcAcceptance
	}
	want := []presentationAC{
		{ID: 1, Result: unknown, TransferSyntax: map[bool]string{false: ImplicitVRLittleEndian, true: ExplicitVRLittleEndian}[on]},
		{ID: 3, Result: pcAbstractNotSupported, TransferSyntax: ImplicitVRLittleEndian},
		{ID: 5, Result: map[bool]byte{false: pcAbstractNotSupported, true: pcTransferNotSupported}[on], TransferSyntax: ImplicitVRLittleEndian},
		{ID: 7, Result: pcAcceptance, TransferSyntax: ImplicitVRLittleEndian},
		{ID: 9, Result: pcAbstractNotSupported, TransferSyntax: ImplicitVRLittleEndian},
		{ID: 11, Result: pcAbstractNotSupported, TransferSyntax: ImplicitVRLittleEndian},
		{ID: 13, Result: pcAcceptance, TransferSyntax: ExplicitVRLittleEndian},
	}
	if !slices.Equal(ac.Results, want) {
		t.Errorf("accept unknown %v: results\n got %+v\nwant %+v", on, ac.Results, want)
	}
	if !on {
		p.release()
		return
	}
	ti := series("98", 1, 1024)[0]
	ti.sopClass = gcTestSetClass
	p.sendCommand(1, request{Field: cStoreRQ, MessageID: 1, SOPClassUID: gcTestSetClass, SOPInstanceUID: ti.sop, HasDataSet: true})
	p.sendData(1, ti.dataSet(), 4096)
	if _, status, _ := p.response(); status != StatusSuccess {
		t.Errorf("store of the unknown class: status 0x%04x", status)
	}
	p.sendCommand(7, request{Field: cEchoRQ, MessageID: 2, SOPClassUID: VerificationSOPClass})
	if field, status, _ := p.response(); field != cEchoRSP || status != StatusSuccess {
		t.Errorf("C-ECHO answered 0x%04x status 0x%04x", field, status)
	}
	p.release()
	b, err := os.ReadFile(spoolPath(ts.spool, ti))
	if err != nil {
		t.Fatal(err)
	}
	var meta bytes.Buffer
	WriteFileMeta(&meta, Instance{CallingAE: "SCANNER", SOPClassUID: gcTestSetClass, SOPInstanceUID: ti.sop, TransferSyntaxUID: ExplicitVRLittleEndian})
	if !bytes.Equal(b, append(meta.Bytes(), ti.dataSet()...)) {
		t.Error("the instance of the unknown class is not stored as sent")
	}
}
