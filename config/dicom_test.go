package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// withDICOM is minimal with a listener whose spool is the watch's folder.
const withDICOM = minimal + `
[[dicom]]
listen = "0.0.0.0:11112"
ae_title = "GCINGEST"
allow = [{ae = "CT1"}, {from = "10.0.0.0/24"}, {ae = "PACS", from = "10.1.0.5"}]
spool = "/data/in"
`

func TestDICOMTableParses(t *testing.T) {
	c, err := Parse(strings.NewReader(withDICOM), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.DICOM) != 1 {
		t.Fatalf("got %d dicom tables, want 1", len(c.DICOM))
	}
	d := c.DICOM[0]
	if got, want := c.SpoolWatch(d), 0; got != want {
		t.Errorf("SpoolWatch = %d, want %d", got, want)
	}
	if !c.IsSpool(0) {
		t.Error("IsSpool(0) = false, want true")
	}
	nets := []netip.Prefix{d.Allow[0].Network(), d.Allow[1].Network(), d.Allow[2].Network()}
	want := []netip.Prefix{{}, netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("10.1.0.5/32")}
	for i := range nets {
		if nets[i] != want[i] {
			t.Errorf("allow[%d].Network() = %v, want %v", i, nets[i], want[i])
		}
	}
	if ws := c.Warnings(); len(ws) != 0 {
		t.Errorf("warnings = %q, want none", ws)
	}
}

// accept_unknown_classes is off unless set; on, it is valid, and warned
// about only where the spool's watch de-identifies (such instances would be
// received, then fail unsent).
func TestDICOMAcceptUnknownClasses(t *testing.T) {
	for _, tc := range []struct {
		extra, watch string
		on           bool
		warn         bool
	}{
		{"", "", false, false},
		{"accept_unknown_classes = false\n", "", false, false},
		{"accept_unknown_classes = true\n", "", true, false},
		{"accept_unknown_classes = true\n", "deidentify = false\n", true, false},
		{"accept_unknown_classes = true\n", "deidentify = true\n", true, true},
		{"", "deidentify = true\n", false, false},
	} {
		src := strings.Replace(withDICOM, "interface = \"ct-image\"\n", "interface = \"ct-image\"\n"+tc.watch, 1) + tc.extra
		c, err := Parse(strings.NewReader(src), "t.toml")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("%q %q: %v", tc.extra, tc.watch, err)
		}
		if c.DICOM[0].AcceptUnknownClasses != tc.on {
			t.Errorf("%q: accept_unknown_classes = %v", tc.extra, c.DICOM[0].AcceptUnknownClasses)
		}
		ws := c.Warnings()
		if warned := len(ws) == 1 && strings.Contains(ws[0], "dicom[0].accept_unknown_classes = true, but watch[0] de-identifies"); warned != tc.warn || len(ws) > 1 {
			t.Errorf("%q %q: warnings %q, want one about de-identification: %v", tc.extra, tc.watch, ws, tc.warn)
		}
	}
	if _, err := Parse(strings.NewReader(withDICOM+"accept_unknown_classes = \"yes\"\n"), "t.toml"); err == nil {
		t.Error("accept_unknown_classes = \"yes\" parsed; want a type error")
	}
}

func TestDICOMEmptyAllowWarns(t *testing.T) {
	c, err := Parse(strings.NewReader(strings.Replace(withDICOM, `allow = [{ae = "CT1"}, {from = "10.0.0.0/24"}, {ae = "PACS", from = "10.1.0.5"}]`, "", 1)), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("an empty allow list refuses every caller, which is valid: %v", err)
	}
	if ws := c.Warnings(); len(ws) != 1 || !strings.Contains(ws[0], "dicom[0].allow is empty") {
		t.Errorf("warnings = %q, want one naming dicom[0].allow", ws)
	}
}

func TestDICOMValidation(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		key  string
	}{
		{"no port", func(c *Config) { c.DICOM[0].Listen = "0.0.0.0" }, "dicom[0].listen"},
		{"port 0", func(c *Config) { c.DICOM[0].Listen = ":0" }, "dicom[0].listen"},
		{"port too big", func(c *Config) { c.DICOM[0].Listen = ":70000" }, "dicom[0].listen"},
		{"port name", func(c *Config) { c.DICOM[0].Listen = ":dicom" }, "dicom[0].listen"},
		{"status port", func(c *Config) { c.DICOM[0].Listen = ":9187" }, "dicom[0].listen"},
		{"same port twice", func(c *Config) { c.DICOM = append(c.DICOM, c.DICOM[0]); c.DICOM[1].Listen = ":11112" }, "dicom[1].listen"},
		{"AE title too long", func(c *Config) { c.DICOM[0].AETitle = "GCINGEST-RECEIVER" }, "dicom[0].ae_title"},
		{"AE title backslash", func(c *Config) { c.DICOM[0].AETitle = `GC\1` }, "dicom[0].ae_title"},
		{"AE title missing", func(c *Config) { c.DICOM[0].AETitle = "" }, "dicom[0].ae_title"},
		{"AE title spaces", func(c *Config) { c.DICOM[0].AETitle = " GC" }, "dicom[0].ae_title"},
		{"AE title not ASCII", func(c *Config) { c.DICOM[0].AETitle = "GCÏNGEST" }, "dicom[0].ae_title"},
		{"empty allow entry", func(c *Config) { c.DICOM[0].Allow[1] = DICOMCaller{} }, "dicom[0].allow[1]"},
		{"bad calling AE", func(c *Config) { c.DICOM[0].Allow[0].AE = "A-CALLING-AE-TITLE" }, "dicom[0].allow[0].ae"},
		{"bad network", func(c *Config) { c.DICOM[0].Allow[1].From = "10.0.0.0/33" }, "dicom[0].allow[1].from"},
		{"host name as network", func(c *Config) { c.DICOM[0].Allow[1].From = "ct1.example.org" }, "dicom[0].allow[1].from"},
		{"cert without key", func(c *Config) { c.DICOM[0].TLSCert = "/etc/gcingest/dicom.crt" }, "dicom[0].tls_key"},
		{"key without cert", func(c *Config) { c.DICOM[0].TLSKey = "/etc/gcingest/dicom.key" }, "dicom[0].tls_cert"},
		{"client CA without cert", func(c *Config) { c.DICOM[0].TLSClientCA = "/etc/gcingest/ca.pem" }, "dicom[0].tls_client_ca"},
		{"relative cert", func(c *Config) { c.DICOM[0].TLSCert, c.DICOM[0].TLSKey = "dicom.crt", "/k" }, "dicom[0].tls_cert"},
		{"no spool", func(c *Config) { c.DICOM[0].Spool = "" }, "dicom[0].spool"},
		{"relative spool", func(c *Config) { c.DICOM[0].Spool = "in" }, "dicom[0].spool"},
		{"spool not watched", func(c *Config) { c.DICOM[0].Spool = "/data/other" }, "dicom[0].spool"},
		{"spool inside a watch", func(c *Config) { c.DICOM[0].Spool = "/data/in/dicom" }, "dicom[0].spool"},
		{"spool watched by file mode", func(c *Config) { c.Watch[0].Group = "file" }, "dicom[0].spool"},
		{"spool watched by folder mode", func(c *Config) { c.Watch[0].Group = "folder" }, "dicom[0].spool"},
		{"too many associations", func(c *Config) { c.DICOM[0].MaxAssociations = 5000 }, "dicom[0].max_associations"},
		{"journal too small", func(c *Config) { c.DICOM[0].Journal = "512KiB" }, "dicom[0].journal"},
		{"journal too big", func(c *Config) { c.DICOM[0].Journal = "32GiB" }, "dicom[0].journal"},
		{"journal not a size", func(c *Config) { c.DICOM[0].Journal = "lots" }, "dicom[0].journal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader(withDICOM), "t.toml")
			if err != nil {
				t.Fatal(err)
			}
			tt.mod(c)
			err = c.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("got %v, want a *FieldError", err)
			}
			if !strings.Contains(err.Error(), tt.key+":") {
				t.Errorf("got %q, want an error naming %s", err, tt.key)
			}
		})
	}
}

func TestDICOMUnknownKey(t *testing.T) {
	_, err := Parse(strings.NewReader(withDICOM+"aetitle = \"X\"\n"), "t.toml")
	if err == nil || !strings.Contains(err.Error(), `unknown key "dicom.aetitle"`) {
		t.Errorf("got %v, want an unknown key dicom.aetitle", err)
	}
}

// TestExampleDICOMBlockValidates: config.example.toml shows the [[dicom]]
// table commented out (an agent that listens on the network is a choice);
// with the comment marks removed, it and its spool watch validate.
func TestExampleDICOMBlockValidates(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "config.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "# ---- [[dicom]]", "# ---- end of [[dicom]]"
	src := string(b)
	i, j := strings.Index(src, begin), strings.Index(src, end)
	if i < 0 || j < i {
		t.Fatalf("config.example.toml has no block between %q and %q", begin, end)
	}
	var block []string
	for _, l := range strings.Split(src[i:j], "\n")[1:] {
		block = append(block, strings.TrimPrefix(l, "#"))
	}
	c, err := Parse(strings.NewReader(minimal+strings.Join(block, "\n")), "example")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.DICOM) != 1 || c.SpoolWatch(c.DICOM[0]) != 1 {
		t.Fatalf("got %d dicom tables spooling into watch %d; want 1 into watch[1]", len(c.DICOM), c.SpoolWatch(c.DICOM[0]))
	}
	if d := c.DICOM[0]; d.Listen == "" || d.AETitle == "" || len(d.Allow) == 0 || d.TLSCert == "" || d.TLSKey == "" || d.TLSClientCA == "" || d.MaxAssociations == 0 {
		t.Errorf("the example does not show every key: %+v", d)
	}
}

func TestDICOMJournalBytes(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "16MiB": 16 << 20, "1GiB": 1 << 30} {
		c, err := Parse(strings.NewReader(withDICOM), "t.toml")
		if err != nil {
			t.Fatal(err)
		}
		c.DICOM[0].Journal = in
		if err := c.Validate(); err != nil {
			t.Fatalf("journal %q: %v", in, err)
		}
		if got := c.DICOM[0].JournalBytes(); got != want {
			t.Errorf("journal %q = %d bytes, want %d", in, got, want)
		}
	}
}
