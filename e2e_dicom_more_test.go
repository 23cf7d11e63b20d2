package main

// More of issue 21's tests against a peer no one here wrote, dcmtk's
// storescu, sending to the real binary: a long series, associations in
// parallel, DICOM over TLS and mutual TLS, and a sender killed in the
// middle of a series that then sends it all again. Each asserts what a
// user would check: one archive item per series holding every instance
// once, and nothing answered success that was not on disk then.
//
// They run in parallel with each other: each has its own fake server,
// folders and ports, and spends most of its time waiting for dicom_settle,
// so two at a time (go test's -parallel, the number of cores) take about
// half the time of one after the other.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

// sopOf returns the SOP Instance UID (0008,0018) of an explicit VR little
// endian Part 10 file, "" when it has none.
func sopOf(b []byte) string {
	tag := []byte{0x08, 0x00, 0x18, 0x00, 'U', 'I'}
	i := bytes.Index(b, tag)
	if i < 0 || i+8 > len(b) {
		return ""
	}
	n := int(binary.LittleEndian.Uint16(b[i+6:]))
	if i+8+n > len(b) {
		return ""
	}
	return strings.TrimRight(string(b[i+8:i+8+n]), "\x00 ")
}

// sopsOf returns the SOP Instance UIDs of the files sent, sorted.
func sopsOf(t *testing.T, files []string) []string {
	t.Helper()
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sopOf(b))
	}
	slices.Sort(out)
	return out
}

// assertOneItemPerSeries checks the archive as a user would, for a watch
// that does not de-identify (so that the instances keep their UIDs): one
// item per series sent, each holding every instance of its series once
// and nothing else.
//
// It first waits until the archive holds as many instances as were sent
// (or more: a series twice), so that a series uploaded in two goes, its
// sender having paused for longer than dicom_settle, is whole again.
func (e *e2eEnv) assertOneItemPerSeries(series ...[]string) {
	e.t.Helper()
	want := map[string]int{} // the first SOP Instance UID of a series → its index
	sops := make([][]string, len(series))
	total := 0
	for i, files := range series {
		sops[i] = sopsOf(e.t, files)
		want[sops[i][0]] = i
		total += len(files)
	}
	var items map[string][][]byte
	waitFor(e.t, 60*time.Second, fmt.Sprintf("the %d instances sent in the archive", total), func() bool {
		items = e.itemInstances()
		n := 0
		for _, insts := range items {
			n += len(insts)
		}
		return n >= total
	}, e.logTail)
	if len(items) != len(series) {
		e.t.Errorf("the archive has %d items, want %d: one per series", len(items), len(series))
	}
	seen := map[int]string{}
	for pk, insts := range items {
		var got []string
		for _, b := range insts {
			got = append(got, sopOf(b))
		}
		slices.Sort(got)
		i, ok := want[got[0]]
		if !ok {
			e.t.Errorf("item %s holds %d instances, starting with %s, of no series sent", pk, len(got), got[0])
			continue
		}
		if other, dup := seen[i]; dup {
			e.t.Errorf("series %d is in two items, %s and %s", i, other, pk)
		}
		seen[i] = pk
		if !slices.Equal(got, sops[i]) {
			e.t.Errorf("item %s holds %d instances; want the %d of series %d, each once", pk, len(got), len(sops[i]), i)
		}
	}
}

// TestE2EDICOMLongSeries: the series of 500 instances (small
// ones, 2 KiB of pixels: the count is what this is about; storescu sends
// them in about half a second) in one association lands whole in one
// item; every instance storescu was told success for was in the spool
// when it returned.
func TestE2EDICOMLongSeries(t *testing.T) {
	needStorescu(t)
	t.Parallel()
	e := newE2E(t, gcapitest.Options{}, "")
	dicomAddr := freeAddr(t)
	e.writeDICOMConfig("", "1s", "", e.dicomTable(dicomAddr, ""))
	const n = 500
	files := writeCTSeries(t, "10", n, 2048)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	agent := e.startUp()
	defer e.stop(agent)

	start := time.Now()
	if out, err := storescu(ctx, dicomAddr, "CT1", files).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	t.Logf("storescu sent %d instances in %v", n, time.Since(start).Round(time.Millisecond))
	e.waitSpooled(n)
	e.assertOneItemPerSeries(files)
}

// TestE2EDICOMParallelAssociations: three storescu processes send three
// series of one study at once, from three calling AE titles; each series
// lands in an item of its own, whole.
func TestE2EDICOMParallelAssociations(t *testing.T) {
	needStorescu(t)
	t.Parallel()
	e := newE2E(t, gcapitest.Options{}, "")
	dicomAddr := freeAddr(t)
	e.writeDICOMConfig("", "1s", "", e.dicomTable(dicomAddr, ""))
	const n = 60
	var series [][]string
	for i := range 3 {
		series = append(series, writeCTSeriesOf(t, "11", fmt.Sprint(i+1), n, 4096))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	agent := e.startUp()
	defer e.stop(agent)

	var wg sync.WaitGroup
	errs := make([]error, len(series))
	outs := make([][]byte, len(series))
	for i, files := range series {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = storescu(ctx, dicomAddr, fmt.Sprintf("CT%d", i+1), files).CombinedOutput()
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("storescu of series %d: %v\n%s", i, err, outs[i])
		}
	}
	e.waitSpooled(3 * n)
	e.assertOneItemPerSeries(series...)
}

// TestE2EDICOMOverTLS: one listener speaks DICOM over TLS, another
// mutual TLS; storescu +tla (no client certificate) sends a series to the
// first, storescu +tls with a certificate of the client CA one to the
// second, and each lands in its item. A plain connection to the TLS
// listener and one without a certificate to the mutual TLS one store
// nothing.
func TestE2EDICOMOverTLS(t *testing.T) {
	needStorescu(t)
	t.Parallel()
	e := newE2E(t, gcapitest.Options{}, "")
	pki := t.TempDir()
	ca, caKey := writeCert(t, pki, "ca", nil, nil)
	writeCert(t, pki, "server", ca, caKey)
	writeCert(t, pki, "client", ca, caKey)
	file := func(name string) string { return filepath.Join(pki, name) }
	tlsAddr, mutualAddr := freeAddr(t), freeAddr(t)
	e.writeDICOMConfig("", "1s", "",
		e.dicomTable(tlsAddr, fmt.Sprintf("tls_cert = %q\ntls_key = %q", file("server.crt"), file("server.key"))),
		e.dicomTable(mutualAddr, fmt.Sprintf("tls_cert = %q\ntls_key = %q\ntls_client_ca = %q", file("server.crt"), file("server.key"), file("ca.crt"))))
	const n = 20
	anonymous, mutual := writeCTSeries(t, "12", n, 4096), writeCTSeries(t, "13", n, 4096)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	agent := e.startUp()
	defer e.stop(agent)

	// storescu checks the listener's certificate against the CA (-rc,
	// its default).
	if out, err := storescu(ctx, tlsAddr, "CT1", anonymous, "+tla", "+cf", file("ca.crt")).CombinedOutput(); err != nil {
		t.Fatalf("storescu +tla to the TLS listener: %v\n%s", err, out)
	}
	if out, err := storescu(ctx, mutualAddr, "CT2", mutual, "+tls", file("client.key"), file("client.crt"), "+cf", file("ca.crt")).CombinedOutput(); err != nil {
		t.Fatalf("storescu +tls with a client certificate to the mutual TLS listener: %v\n%s", err, out)
	}
	e.waitSpooled(2 * n)

	// Refused: no TLS at a TLS listener, no client certificate where one
	// is required.
	stray := writeCTSeries(t, "14", 1, 256)
	if out, err := storescu(ctx, tlsAddr, "CT3", stray, "--connection-timeout", "5").CombinedOutput(); err == nil {
		t.Errorf("plain storescu to the TLS listener passed\n%s", out)
	}
	if out, err := storescu(ctx, mutualAddr, "CT3", stray, "+tla", "+cf", file("ca.crt")).CombinedOutput(); err == nil {
		t.Errorf("storescu without a client certificate to the mutual TLS listener passed\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(e.drop, "CT3")); err == nil {
		t.Error("the spool holds a folder of CT3, whose every connection should have failed")
	}

	e.assertOneItemPerSeries(anonymous, mutual)
}

// TestE2EDICOMSenderKilledMidSeries: storescu is SIGKILLed in the middle
// of a series (its association ends without a release or an abort: the
// connection just closes); every instance it was told success for is in
// the spool; it then sends the whole series again, and the series lands
// in one item holding every instance once.
func TestE2EDICOMSenderKilledMidSeries(t *testing.T) {
	needStorescu(t)
	t.Parallel()
	e := newE2E(t, gcapitest.Options{}, "")
	dicomAddr := freeAddr(t)
	e.writeDICOMConfig("", "3s", "", e.dicomTable(dicomAddr, ""))
	const n, killAfter = 200, 30
	files := writeCTSeries(t, "15", n, 32<<10)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	agent := e.startUp()
	defer e.stop(agent)

	sender := startTracked(t, ctx, dicomAddr, "CT1", files)
	waitFor(t, 30*time.Second, fmt.Sprintf("storescu to be told success for %d instances", killAfter), func() bool {
		return len(sender.answered()) >= killAfter
	}, e.logTail)
	_ = sender.cmd.Process.Signal(syscall.SIGKILL)
	_ = sender.wait()
	answered := sopsOf(t, sender.answered())
	if len(answered) == n {
		t.Log("storescu sent the whole series before it was killed; the test shows less than it should")
	}
	e.waitAnsweredSpooled(answered)
	t.Logf("storescu killed after %d instances answered success; %d in the spool", len(answered), spooledInstances(t, e.drop))

	if out, err := storescu(ctx, dicomAddr, "CT1", files).CombinedOutput(); err != nil {
		t.Fatalf("storescu again: %v\n%s", err, out)
	}
	// Each once: the instances answered before the kill are not stored
	// again.
	e.waitSpooled(n)
	e.assertOneItemPerSeries(files)
}

// writeCert writes name.crt and name.key (PEM) into dir: a CA when parent
// is nil, else a certificate for 127.0.0.1 and localhost, for a server or
// a client, signed by it.
func writeCert(t *testing.T, dir, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "gcingest e2e " + name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		parent, parentKey = tmpl, key
	} else {
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for file, block := range map[string]*pem.Block{name + ".crt": {Type: "CERTIFICATE", Bytes: der}, name + ".key": {Type: "PRIVATE KEY", Bytes: kb}} {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key
}
