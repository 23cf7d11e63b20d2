package dimse

import (
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/gcingest/gcingest/dicom"
)

func TestNegotiation(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxPDULength = 64 << 10 })
	p := dialPeer(t, ts.addr)
	ac := p.associate(associateRQ(32<<10,
		presentationRQ{ID: 1, AbstractSyntax: ctImageStorage, TransferSyntaxes: []string{ExplicitVRBigEndian, JPEG2000Lossless, ExplicitVRLittleEndian}},
		presentationRQ{ID: 3, AbstractSyntax: "1.2.840.10008.5.1.4.1.2.2.1", TransferSyntaxes: []string{ImplicitVRLittleEndian}}, // C-FIND
		presentationRQ{ID: 5, AbstractSyntax: ctImageStorage, TransferSyntaxes: []string{ExplicitVRBigEndian}},
		presentationRQ{ID: 7, AbstractSyntax: VerificationSOPClass, TransferSyntaxes: []string{ImplicitVRLittleEndian}},
		presentationRQ{ID: 9, AbstractSyntax: "1.2.840.10008.5.1.4.1.1.77.1.6", TransferSyntaxes: []string{JPEGBaseline8Bit}},
		presentationRQ{ID: 9, AbstractSyntax: ctImageStorage, TransferSyntaxes: []string{ExplicitVRLittleEndian}}, // ID used twice
	))
	want := []presentationAC{
		{ID: 1, Result: pcAcceptance, TransferSyntax: JPEG2000Lossless},
		{ID: 3, Result: pcAbstractNotSupported, TransferSyntax: ImplicitVRLittleEndian},
		{ID: 5, Result: pcTransferNotSupported, TransferSyntax: ImplicitVRLittleEndian},
		{ID: 7, Result: pcAcceptance, TransferSyntax: ImplicitVRLittleEndian},
		{ID: 9, Result: pcAcceptance, TransferSyntax: JPEGBaseline8Bit},
		{ID: 9, Result: pcUserRejection, TransferSyntax: ImplicitVRLittleEndian},
	}
	if !slices.Equal(ac.Results, want) {
		t.Errorf("results\n got %+v\nwant %+v", ac.Results, want)
	}
	if ac.MaxPDULength != 64<<10 || ac.ImplementationUID != ImplementationClassUID || ac.CalledAE != "GCINGEST" || ac.CallingAE != "SCANNER" {
		t.Errorf("AC %+v", ac)
	}
	p.release()
}

func TestRejections(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   func(*Config)
		rq    func(*associate)
		want  associateRJ
		count bool // counted as refused
	}{
		{"called AE unknown", nil, func(rq *associate) { rq.CalledAE = "OTHER" }, associateRJ{rjPermanent, rjSourceUser, rjUserCalledAENotKnown}, true},
		{"calling AE not allowed", nil, func(rq *associate) { rq.CallingAE = "INTRUDER" }, associateRJ{rjPermanent, rjSourceUser, rjUserCallingAENotAllowed}, true},
		{"empty allow list", func(c *Config) { c.Allow = nil }, nil, associateRJ{rjPermanent, rjSourceUser, rjUserCallingAENotAllowed}, true},
		{"address not allowed", func(c *Config) {
			c.Allow = []Caller{{AETitle: "SCANNER", Network: netip.MustParsePrefix("10.0.0.0/8")}}
		}, nil, associateRJ{rjPermanent, rjSourceUser, rjUserCallingAENotAllowed}, true},
		{"application context", nil, func(rq *associate) { rq.ApplicationContext = "1.2.3" }, associateRJ{rjPermanent, rjSourceUser, rjUserAppContext}, true},
		{"protocol version", nil, func(rq *associate) { rq.ProtocolVersion = 2 }, associateRJ{rjPermanent, rjSourceACSE, rjACSEProtocolVersion}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, tc.cfg)
			p := dialPeer(t, ts.addr)
			rq := associateRQ(16<<10, standardContexts...)
			if tc.rq != nil {
				tc.rq(rq)
			}
			p.send(rq)
			got := p.waitClosed()
			if len(got) != 1 {
				t.Fatalf("got %d PDUs %+v, want one A-ASSOCIATE-RJ", len(got), got)
			}
			if rj, ok := got[0].(*associateRJ); !ok || *rj != tc.want {
				t.Errorf("got %T %+v, want %+v", got[0], got[0], tc.want)
			}
			if s := ts.Stats(); s.Refused != 1 || s.Total != 0 {
				t.Errorf("stats %+v, want one refusal", s)
			}
		})
	}
}

func TestAllowByNetwork(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Allow = []Caller{{Network: netip.MustParsePrefix("127.0.0.0/8")}} })
	p := dialPeer(t, ts.addr)
	rq := associateRQ(16<<10, standardContexts...)
	rq.CallingAE = "ANYONE"
	p.associate(rq)
	p.release()
}

// TestBusy: beyond MaxAssociations a caller is rejected as transient, and
// accepted again once a slot frees.
func TestBusy(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxAssociations = 1 })
	first := dialPeer(t, ts.addr)
	first.associate(associateRQ(16<<10, standardContexts...))

	second := dialPeer(t, ts.addr)
	second.send(associateRQ(16<<10, standardContexts...))
	got := second.waitClosed()
	want := associateRJ{rjTransient, rjSourcePresentation, rjPresentationLimitReached}
	if len(got) != 1 || *got[0].(*associateRJ) != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	first.release()
	waitFor(t, "the slot to free", 5*time.Second, func() bool { return ts.Stats().Current == 0 })
	third := dialPeer(t, ts.addr)
	third.associate(associateRQ(16<<10, standardContexts...))
	third.release()
}

func TestEchoAndStore(t *testing.T) {
	ts := startServer(t, nil)
	p := dialPeer(t, ts.addr)
	p.associate(associateRQ(16<<10, standardContexts...))

	p.sendCommand(3, request{Field: cEchoRQ, MessageID: 1, SOPClassUID: VerificationSOPClass})
	if field, status, _ := p.response(); field != cEchoRSP || status != StatusSuccess {
		t.Errorf("C-ECHO answered 0x%04x status 0x%04x", field, status)
	}

	insts := series("20", 3, 64<<10)
	// One in a single PDV, one in many small PDUs, one with the command
	// and the whole data set in one PDU.
	if s := p.store(2, insts[0], 1<<20); s != StatusSuccess {
		t.Errorf("store: status 0x%04x", s)
	}
	if s := p.store(3, insts[1], 100); s != StatusSuccess {
		t.Errorf("store in 100-byte fragments: status 0x%04x", s)
	}
	ds := insts[2].dataSet()
	p.send(&pdataTF{PDVs: []pdv{
		{ContextID: 1, Command: true, Last: true, Data: request{Field: cStoreRQ, MessageID: 4, SOPClassUID: ctImageStorage, SOPInstanceUID: insts[2].sop, HasDataSet: true}.encode()},
		{ContextID: 1, Data: ds[:1000]},
		{ContextID: 1, Last: true, Data: ds[1000:]},
	}})
	if _, s, _ := p.response(); s != StatusSuccess {
		t.Errorf("store in one PDU: status 0x%04x", s)
	}
	p.release()

	dcm, other := spooled(t, ts.spool)
	if len(dcm) != 3 || len(other) != 0 {
		t.Fatalf("spool holds %v and %v, want 3 instances", dcm, other)
	}
	for _, ti := range insts {
		b, err := os.ReadFile(filepath.Join(ts.spool, "SCANNER", ti.study, ti.series, ti.sop+".dcm"))
		if err != nil {
			t.Fatal(err)
		}
		if want := ti.file(t); string(b[:len(b)-len(ti.dataSet())]) == string(want[:len(want)-len(ti.dataSet())]) {
			t.Errorf("meta group has no source AE title")
		}
		if got, want := b[len(b)-len(ds):], ti.dataSet(); string(got) != string(want) {
			t.Errorf("instance %s: data set differs from what was sent", ti.sop)
		}
	}
	if s := ts.Stats(); s.Instances != 3 || s.Bytes != int64(3*len(ds)) {
		t.Errorf("stats %+v", s)
	}
}

// failingStore fails every instance with err, after reading it.
type failingStore struct{ err error }

func (f failingStore) Store(ctx context.Context, in Instance, r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	return f.err
}

func TestStoreStatus(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func(t *testing.T, spool string) Store
		inst  func(ti *testInstance)
		data  []byte
		want  uint16
	}{
		{"write error", func(t *testing.T, spool string) Store { return failingStore{errors.New("disk full")} }, nil, nil, StatusOutOfResources},
		{"spool folder cannot be made", func(t *testing.T, spool string) Store {
			// A file where the calling AE's folder goes.
			if err := os.WriteFile(filepath.Join(spool, "SCANNER"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := NewSpoolStore(spool, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			return s
		}, nil, nil, StatusOutOfResources},
		{"data set not DICOM", nil, nil, []byte("this is not a data set, just text!"), StatusCannotUnderstand},
		{"no series UID", nil, func(ti *testInstance) { ti.series = "" }, nil, StatusCannotUnderstand},
		{"data set of another SOP class", nil, func(ti *testInstance) { ti.sopClass = "1.2.840.10008.5.1.4.1.1.4" }, nil, StatusDataSetMismatch},
		{"SOP instance UID not a UID", nil, func(ti *testInstance) { ti.sop = "../../etc/passwd" }, nil, StatusCannotUnderstand},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spool := t.TempDir()
			ts := startServer(t, func(c *Config) {
				if tc.store != nil {
					c.Store = tc.store(t, spool)
				}
			})
			p := dialPeer(t, ts.addr)
			p.associate(associateRQ(16<<10, standardContexts...))
			ti := series("30", 1, 256)[0]
			if tc.inst != nil {
				tc.inst(&ti)
			}
			data := tc.data
			if data == nil {
				data = ti.dataSet()
			}
			p.sendCommand(1, request{Field: cStoreRQ, MessageID: 7, SOPClassUID: ctImageStorage, SOPInstanceUID: ti.sop, HasDataSet: true})
			p.sendData(1, data, 4096)
			if _, status, _ := p.response(); status != tc.want {
				t.Errorf("status 0x%04x, want 0x%04x", status, tc.want)
			}
			// The association goes on.
			if s := p.store(8, series("31", 1, 256)[0], 4096); tc.store == nil && s != StatusSuccess {
				t.Errorf("next store: status 0x%04x", s)
			}
			p.release()
			if tc.store == nil {
				dcm, other := spooled(t, ts.spool)
				if len(dcm) != 1 || len(other) != 0 {
					t.Errorf("spool holds %v and %v, want only the next instance", dcm, other)
				}
			}
		})
	}
}

// TestCutShort: a data set cut short by an abort, a close or a protocol
// error leaves nothing in the spool, and the server serves on.
func TestCutShort(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  func(p *peer)
	}{
		{"abort", func(p *peer) { p.send(&abort{abortSourceUser, 0}) }},
		{"close", func(p *peer) { p.conn.Close() }},
		{"release", func(p *peer) { p.send(&releaseRQ{}) }},
		{"command inside the data set", func(p *peer) {
			p.sendCommand(1, request{Field: cEchoRQ, MessageID: 9, SOPClassUID: VerificationSOPClass})
		}},
		{"garbage PDU", func(p *peer) { p.conn.Write([]byte{0x09, 0, 0, 0, 0, 0}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, nil)
			p := dialPeer(t, ts.addr)
			p.associate(associateRQ(16<<10, standardContexts...))
			ti := series("40", 1, 256<<10)[0]
			p.sendCommand(1, request{Field: cStoreRQ, MessageID: 1, SOPClassUID: ctImageStorage, SOPInstanceUID: ti.sop, HasDataSet: true})
			ds := ti.dataSet()
			p.send(&pdataTF{PDVs: []pdv{{ContextID: 1, Data: ds[:len(ds)/2]}}})
			tc.cut(p)
			p.waitClosed()
			waitFor(t, "the association to end", 10*time.Second, func() bool {
				return ts.Stats().Current == 0
			})
			dcm, other := spooled(t, ts.spool)
			if len(dcm) != 0 || len(other) != 0 {
				t.Errorf("spool holds %v and %v after a cut data set, want nothing", dcm, other)
			}
			q := dialPeer(t, ts.addr)
			q.associate(associateRQ(16<<10, standardContexts...))
			if s := q.store(1, ti, 16<<10); s != StatusSuccess {
				t.Errorf("store after the cut: 0x%04x", s)
			}
			q.release()
		})
	}
}

// TestMaxPDU: the server refuses a PDU beyond the length it announced, and
// splits its own to fit the length the caller announced.
func TestMaxPDU(t *testing.T) {
	t.Run("received", func(t *testing.T) {
		ts := startServer(t, func(c *Config) { c.MaxPDULength = 8 << 10 })
		p := dialPeer(t, ts.addr)
		p.associate(associateRQ(16<<10, standardContexts...))
		p.sendCommand(1, request{Field: cStoreRQ, MessageID: 1, SOPClassUID: ctImageStorage, SOPInstanceUID: "1.2.3", HasDataSet: true})
		p.send(&pdataTF{PDVs: []pdv{{ContextID: 1, Last: true, Data: make([]byte, 8<<10)}}})
		got := p.waitClosed()
		if len(got) != 1 || got[0].pduType() != typeAbort || got[0].(*abort).Reason != abortInvalidParameter {
			t.Errorf("got %+v, want an A-ABORT for an invalid parameter", got)
		}
	})
	t.Run("sent", func(t *testing.T) {
		ts := startServer(t, nil)
		p := dialPeer(t, ts.addr)
		p.associate(associateRQ(40, standardContexts...))
		p.sendCommand(3, request{Field: cEchoRQ, MessageID: 1, SOPClassUID: VerificationSOPClass})
		_, status, sizes := p.response()
		if status != StatusSuccess || len(sizes) < 2 {
			t.Errorf("status 0x%04x in PDUs of %v bytes, want success in several", status, sizes)
		}
		for _, n := range sizes {
			if n > 40 {
				t.Errorf("PDU of %d bytes, above the announced 40", n)
			}
		}
		p.release()
	})
}

// TestTimers: ARTIM closes a connection that sends no request; the idle
// timer aborts an association on which nothing comes.
func TestTimers(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.ARTIMTimeout = 200 * time.Millisecond
		c.IdleTimeout = 300 * time.Millisecond
	})
	t.Run("ARTIM", func(t *testing.T) {
		p := dialPeer(t, ts.addr)
		start := time.Now()
		if got := p.waitClosed(); len(got) != 0 {
			t.Errorf("got %+v, want the connection closed", got)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("closed after %s", d)
		}
	})
	t.Run("idle", func(t *testing.T) {
		p := dialPeer(t, ts.addr)
		p.associate(associateRQ(16<<10, standardContexts...))
		got := p.waitClosed()
		if len(got) != 1 || got[0].pduType() != typeAbort {
			t.Errorf("got %+v, want an A-ABORT", got)
		}
	})
}

// TestStopMidInstance: cancelling Serve's ctx aborts an association in the
// middle of a data set; Serve returns within seconds and keeps nothing.
func TestStopMidInstance(t *testing.T) {
	ts := startServer(t, nil)
	p := dialPeer(t, ts.addr)
	p.associate(associateRQ(16<<10, standardContexts...))
	ti := series("50", 1, 64<<10)[0]
	p.sendCommand(1, request{Field: cStoreRQ, MessageID: 1, SOPClassUID: ctImageStorage, SOPInstanceUID: ti.sop, HasDataSet: true})
	p.send(&pdataTF{PDVs: []pdv{{ContextID: 1, Data: ti.dataSet()[:1000]}}})
	waitFor(t, "the association", 5*time.Second, func() bool { return ts.Stats().Current == 1 })
	start := time.Now()
	ts.stop()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Serve took %s to return", d)
	}
	got := p.waitClosed()
	if len(got) != 1 || got[0].pduType() != typeAbort {
		t.Errorf("got %+v, want an A-ABORT", got)
	}
	dcm, other := spooled(t, ts.spool)
	if len(dcm) != 0 || len(other) != 0 {
		t.Errorf("spool holds %v and %v, want nothing", dcm, other)
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{AETitle: "GCINGEST", Allow: []Caller{{AETitle: "CT1"}}, Store: failingStore{}}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
	}{
		{"no AE title", func(c *Config) { c.AETitle = "" }},
		{"long AE title", func(c *Config) { c.AETitle = "ABCDEFGHIJKLMNOPQ" }},
		{"backslash", func(c *Config) { c.AETitle = `A\B` }},
		{"blank", func(c *Config) { c.AETitle = "   " }},
		{"empty caller", func(c *Config) { c.Allow = []Caller{{}} }},
		{"bad transfer syntax", func(c *Config) { c.TransferSyntaxes = []string{"1.2..3"} }},
		{"tiny PDU", func(c *Config) { c.MaxPDULength = 100 }},
		{"no store", func(c *Config) { c.Store = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.change(&c)
			if err := c.Validate(); err == nil {
				t.Errorf("Validate accepted %+v", c)
			}
		})
	}
}

// TestStoredSyntaxes: data sets in deflated and encapsulated syntaxes are
// stored as they arrived, under a meta group naming their syntax, and read
// back whole.
func TestStoredSyntaxes(t *testing.T) {
	ti := series("60", 1, 512)[0]
	plain := ti.dataSet()
	pixelAt := bytes.Index(plain, []byte{0xE0, 0x7F, 0x10, 0x00})
	var deflated bytes.Buffer
	zw, _ := flate.NewWriter(&deflated, flate.BestSpeed)
	zw.Write(plain)
	zw.Close()
	// Encapsulated pixel data: an empty offset table, one fragment, the
	// sequence delimiter (PS3.5 §A.4).
	encap := append([]byte{}, plain[:pixelAt]...)
	encap = append(encap, 0xE0, 0x7F, 0x10, 0x00, 'O', 'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF)
	encap = append(encap, 0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0)
	frag := []byte{0xFF, 0xD8, 0xFF, 0xD9, 0, 0}
	encap = append(encap, 0xFE, 0xFF, 0x00, 0xE0, byte(len(frag)), 0, 0, 0)
	encap = append(encap, frag...)
	encap = append(encap, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0)

	for _, tc := range []struct {
		ts   string
		data []byte
	}{
		{DeflatedExplicitVRLittleEndian, deflated.Bytes()},
		{JPEGBaseline8Bit, encap},
	} {
		t.Run(tc.ts, func(t *testing.T) {
			ts := startServer(t, nil)
			p := dialPeer(t, ts.addr)
			p.associate(associateRQ(16<<10, presentationRQ{ID: 1, AbstractSyntax: ctImageStorage, TransferSyntaxes: []string{tc.ts}}))
			p.sendCommand(1, request{Field: cStoreRQ, MessageID: 1, SOPClassUID: ctImageStorage, SOPInstanceUID: ti.sop, HasDataSet: true})
			p.sendData(1, tc.data, 300)
			if _, s, _ := p.response(); s != StatusSuccess {
				t.Fatalf("status 0x%04x", s)
			}
			p.release()
			path := filepath.Join(ts.spool, "SCANNER", ti.study, ti.series, ti.sop+".dcm")
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			h, err := dicom.Verify(f)
			if err != nil {
				t.Fatalf("stored file: %v", err)
			}
			if h.TransferSyntaxUID != tc.ts {
				t.Errorf("meta transfer syntax %s, want %s", h.TransferSyntaxUID, tc.ts)
			}
			b, _ := os.ReadFile(path)
			if !bytes.HasSuffix(b, tc.data) {
				t.Errorf("stored data set differs from the one sent")
			}
		})
	}
}

// TestStatsByCallerBounded: callers naming ever new AE titles to be
// refused cannot grow the per-caller counters without end, nor crowd out
// the callers that are accepted.
func TestStatsByCallerBounded(t *testing.T) {
	s, err := NewServer(Config{AETitle: "GCINGEST", Store: failingStore{}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 * maxCallers {
		s.count(strconv.Itoa(i), true, func(st *Stats) { st.Refused++ })
	}
	if got := len(s.StatsByCaller()); got != maxCallers/2 {
		t.Errorf("%d callers kept after a scan of refusals, want %d", got, maxCallers/2)
	}
	s.count("CT1", false, func(st *Stats) { st.Total++ })
	if got := s.StatsByCaller()["CT1"]; got.Total != 1 {
		t.Errorf("an accepted caller after the scan: %+v", got)
	}
}

// TestCommands: a command set split over PDUs is put back together; a
// command this server does not offer is answered "unrecognized operation"
// and the association goes on; a PDV on a context that was not accepted
// aborts it.
func TestCommands(t *testing.T) {
	ts := startServer(t, nil)
	p := dialPeer(t, ts.addr)
	p.associate(associateRQ(16<<10, append(standardContexts,
		presentationRQ{ID: 5, AbstractSyntax: "1.2.840.10008.5.1.4.1.2.2.1", TransferSyntaxes: []string{ImplicitVRLittleEndian}})...))

	cmd := request{Field: cEchoRQ, MessageID: 1, SOPClassUID: VerificationSOPClass}.encode()
	p.send(&pdataTF{PDVs: []pdv{{ContextID: 3, Command: true, Data: cmd[:10]}}})
	p.send(&pdataTF{PDVs: []pdv{{ContextID: 3, Command: true, Data: cmd[10:20]}, {ContextID: 3, Command: true, Last: true, Data: cmd[20:]}}})
	if field, status, _ := p.response(); field != cEchoRSP || status != StatusSuccess {
		t.Errorf("C-ECHO in three fragments: 0x%04x status 0x%04x", field, status)
	}

	const cFindRQ = 0x0020
	find := request{Field: cFindRQ, MessageID: 2, SOPClassUID: ctImageStorage, HasDataSet: true}
	p.sendCommand(1, find)
	p.sendData(1, []byte{0x08, 0x00, 0x52, 0x00, 0, 0, 0, 0}, 100)
	if field, status, _ := p.response(); field != cFindRQ|0x8000 || status != StatusUnrecognizedOperation {
		t.Errorf("C-FIND: 0x%04x status 0x%04x, want C-FIND-RSP 0x%04x", field, status, StatusUnrecognizedOperation)
	}
	if s := p.store(3, series("90", 1, 256)[0], 4096); s != StatusSuccess {
		t.Errorf("store after the C-FIND: 0x%04x", s)
	}

	// Context 5 (C-FIND) was rejected: using it aborts.
	p.sendCommand(5, request{Field: cEchoRQ, MessageID: 4, SOPClassUID: VerificationSOPClass})
	if got := p.waitClosed(); len(got) != 1 || got[0].pduType() != typeAbort {
		t.Errorf("got %+v, want an A-ABORT", got)
	}
}

func TestEcho(t *testing.T) {
	ts := startServer(t, nil)
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Echo(ctx, dial(), "SCANNER", "GCINGEST"); err != nil {
		t.Errorf("Echo: %v", err)
	}
	err := Echo(ctx, dial(), "INTRUDER", "GCINGEST")
	var rj *RejectedError
	if !errors.As(err, &rj) || rj.Reason != rjUserCallingAENotAllowed {
		t.Errorf("Echo from a caller not allowed: %v, want a *RejectedError for the calling AE", err)
	}
	t.Logf("refusal reads: %v", err)

	// A peer that never answers: Echo returns when ctx ends.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	short, cancelShort := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelShort()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if err := Echo(short, c, "SCANNER", "GCINGEST"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Echo to a silent peer: %v, want context.DeadlineExceeded", err)
	}
	if s := ts.Stats(); s.Total != 1 || s.Refused != 1 {
		t.Errorf("stats %+v", s)
	}
}

// TestSetAllow: a new allow list (a reload) admits a caller it names from
// the next association on, refuses one it no longer names, and leaves an
// association established under the old list to finish its work.
func TestSetAllow(t *testing.T) {
	ts := startServer(t, nil) // allows SCANNER only
	old := dialPeer(t, ts.addr)
	old.associate(associateRQ(16<<10, standardContexts...)) // SCANNER, under the old list

	if err := ts.SetAllow([]Caller{{AETitle: "CT2"}}); err != nil {
		t.Fatal(err)
	}
	ct2 := dialPeer(t, ts.addr)
	rq := associateRQ(16<<10, standardContexts...)
	rq.CallingAE = "CT2"
	ct2.associate(rq)
	ct2.release()

	again := dialPeer(t, ts.addr)
	again.send(associateRQ(16<<10, standardContexts...))
	want := associateRJ{rjPermanent, rjSourceUser, rjUserCallingAENotAllowed}
	if got := again.waitClosed(); len(got) != 1 || *got[0].(*associateRJ) != want {
		t.Fatalf("SCANNER after the new list: got %+v, want %+v", got, want)
	}

	old.sendCommand(3, request{Field: cEchoRQ, MessageID: 1, SOPClassUID: VerificationSOPClass})
	if field, status, _ := old.response(); field != cEchoRSP || status != StatusSuccess {
		t.Errorf("the association from before the change: C-ECHO answered 0x%04x status 0x%04x", field, status)
	}
	old.release()

	if err := ts.SetAllow([]Caller{{}}); err == nil {
		t.Error("SetAllow took an entry naming neither an AE title nor a network")
	}
	ct2 = dialPeer(t, ts.addr)
	ct2.associate(rq) // the refused list left CT2's in force
	ct2.release()
}
