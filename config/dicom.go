package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gcingest/gcingest/dimse"
	"github.com/gcingest/gcingest/watch"
)

// DICOM is one [[dicom]] table: a DICOM storage node (C-STORE and C-ECHO
// SCP) that writes each instance it receives into Spool, a folder that an
// ordinary [[watch]] uploads. The watch keys (archive, interface,
// deidentify, dicom_settle, after_upload ...) are that watch's: one
// pipeline serves both intakes, and a series sent over the network is
// grouped, settled, de-identified and uploaded as a dropped one is.
type DICOM struct {
	// Listen is the TCP address, host:port; an empty host listens on every
	// interface.
	Listen string `toml:"listen"`
	// AETitle is the called AE title the node answers to.
	AETitle string `toml:"ae_title"`
	// Allow lists the callers accepted; empty refuses every caller.
	Allow []DICOMCaller `toml:"allow"`
	// TLSCert and TLSKey, both set, make the listener DICOM over TLS
	// (PS3.15 Annex B); TLSClientCA, set too, requires a client
	// certificate signed by a CA in that PEM file (mutual TLS).
	TLSCert     string `toml:"tls_cert"`
	TLSKey      string `toml:"tls_key"`
	TLSClientCA string `toml:"tls_client_ca"`
	// Spool is the folder instances are written into: the path of a
	// [[watch]] with group = "auto" (the grouping that knows DICOM series).
	Spool string `toml:"spool"`
	// MaxAssociations bounds the associations served at once; 0 is the
	// receiver's default (dimse.DefaultMaxAssociations).
	MaxAssociations int `toml:"max_associations"`
	// AcceptUnknownClasses accepts instances of SOP classes the receiver
	// does not know (private ones, non-standard ones such as those of
	// Grand Challenge's own test sets, storage classes newer than its
	// table: dimse.UnknownSOPClass), as storescp --promiscuous does. Off
	// (the default) they are refused at the association.
	AcceptUnknownClasses bool `toml:"accept_unknown_classes"`
	// Journal is the size of the receive journal ("256MiB" when unset):
	// a series up to about that size is answered at the speed of one
	// flush per instance; a larger one waits for the spool's syncs. It is
	// written in full once, beside the state file.
	Journal string `toml:"journal"`
}

// JournalBytes returns journal in bytes, 0 when unset (the receiver's
// default). Validate first.
func (d DICOM) JournalBytes() int64 {
	if d.Journal == "" {
		return 0
	}
	n, _ := ParseSize(d.Journal)
	return n
}

// DICOMCaller is one entry of a [[dicom]] allow list: a calling AE title,
// the network (or one address) the caller connects from, or both, which
// must then both match.
type DICOMCaller struct {
	AE   string `toml:"ae"`
	From string `toml:"from"` // "10.0.0.0/24", or one address "10.0.0.7"
}

// Network returns From as a prefix: a lone address is a prefix of its full
// length; "" is the zero Prefix (any address). Validate first.
func (c DICOMCaller) Network() netip.Prefix {
	if c.From == "" {
		return netip.Prefix{}
	}
	if p, err := netip.ParsePrefix(c.From); err == nil {
		return p.Masked()
	}
	a, _ := netip.ParseAddr(c.From)
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
}

// TLS reports whether the listener speaks DICOM over TLS.
func (d DICOM) TLS() bool { return d.TLSCert != "" }

// SpoolWatch returns the index of the [[watch]] whose path is d.Spool, or
// -1.
func (c *Config) SpoolWatch(d DICOM) int {
	if d.Spool == "" {
		return -1
	}
	for i, w := range c.Watch {
		if w.Path != "" && filepath.Clean(w.Path) == filepath.Clean(d.Spool) {
			return i
		}
	}
	return -1
}

// IsSpool reports whether watch i is the spool of a [[dicom]] table.
func (c *Config) IsSpool(i int) bool {
	for _, d := range c.DICOM {
		if c.SpoolWatch(d) == i {
			return true
		}
	}
	return false
}

// validateDICOM checks the [[dicom]] tables: the form of every key, that
// the files named exist as paths (their contents are the start-up's to
// prove, as the user the agent runs as), and that each spool is a watch
// that groups DICOM series.
func (c *Config) validateDICOM(bad func(key, msg, fix string)) {
	listens := map[string]int{}
	for i, d := range c.DICOM {
		key := func(k string) string { return fmt.Sprintf("dicom[%d].%s", i, k) }
		if host, port, err := net.SplitHostPort(d.Listen); d.Listen == "" || err != nil {
			bad(key("listen"), fmt.Sprintf("%q is not host:port", d.Listen), `write it like "0.0.0.0:11112" (every interface) or "10.0.0.5:104"`)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			bad(key("listen"), fmt.Sprintf("%q has no port number from 1 to 65535", d.Listen), `11112 is DICOM's registered port, 104 its traditional one`)
		} else if host != "" && strings.ContainsAny(host, " /") {
			bad(key("listen"), fmt.Sprintf("%q is not host:port", d.Listen), `write it like "0.0.0.0:11112"`)
		} else {
			norm := normalListen(host, port)
			if j, seen := listens[norm]; seen {
				bad(key("listen"), fmt.Sprintf("%q is dicom[%d].listen too", d.Listen, j), "give each [[dicom]] table its own port")
			}
			listens[norm] = i
			if c.Status.Listen != "" {
				if _, sport, err := net.SplitHostPort(c.Status.Listen); err == nil && sport == port && (host == "" || IsLoopbackHost(host) || host == "0.0.0.0" || host == "::") {
					bad(key("listen"), fmt.Sprintf("%q takes the port of status.listen %q", d.Listen, c.Status.Listen), "use another port, e.g. 11112")
				}
			}
		}
		if err := dimse.CheckAETitle(d.AETitle); err != nil {
			bad(key("ae_title"), err.Error(), `use up to 16 letters, digits, spaces or punctuation, e.g. "GCINGEST"`)
		} else if strings.TrimSpace(d.AETitle) != d.AETitle {
			bad(key("ae_title"), fmt.Sprintf("%q starts or ends with a space, which DICOM ignores", d.AETitle), "remove the spaces")
		}
		for j, a := range d.Allow {
			akey := fmt.Sprintf("dicom[%d].allow[%d]", i, j)
			if a.AE == "" && a.From == "" {
				bad(akey, "names neither an AE title (ae) nor a network (from)", `write it like {ae = "CT1"}, {from = "10.0.0.0/24"} or both`)
			}
			if a.AE != "" {
				if err := dimse.CheckAETitle(a.AE); err != nil {
					bad(akey+".ae", err.Error(), "use the calling AE title configured on the scanner or PACS")
				} else if strings.TrimSpace(a.AE) != a.AE {
					bad(akey+".ae", fmt.Sprintf("%q starts or ends with a space, which DICOM ignores", a.AE), "remove the spaces")
				}
			}
			if a.From != "" {
				if _, err := netip.ParsePrefix(a.From); err != nil {
					if _, err := netip.ParseAddr(a.From); err != nil {
						bad(akey+".from", fmt.Sprintf("%q is neither an address nor a network", a.From), `write it like "10.0.0.7" or "10.0.0.0/24"`)
					}
				}
			}
		}
		abs := func(k, p string) {
			if p != "" && !filepath.IsAbs(p) {
				bad(key(k), fmt.Sprintf("%q is a relative path", p), "write it as an absolute path; paths never depend on the working directory")
			}
		}
		abs("tls_cert", d.TLSCert)
		abs("tls_key", d.TLSKey)
		abs("tls_client_ca", d.TLSClientCA)
		switch {
		case d.TLSCert != "" && d.TLSKey == "":
			bad(key("tls_key"), "missing, but tls_cert is set", "name the PEM file of the certificate's private key")
		case d.TLSCert == "" && d.TLSKey != "":
			bad(key("tls_cert"), "missing, but tls_key is set", "name the PEM file of the listener's certificate")
		}
		if d.TLSClientCA != "" && d.TLSCert == "" {
			bad(key("tls_client_ca"), "set, but the listener has no tls_cert and tls_key", "mutual TLS needs the listener's own certificate and key too")
		}
		if d.MaxAssociations < 0 || d.MaxAssociations > 1024 {
			bad(key("max_associations"), fmt.Sprintf("%d is out of range", d.MaxAssociations), fmt.Sprintf("use 1 to 1024; 0 is the default, %d", dimse.DefaultMaxAssociations))
		}
		if d.Journal != "" {
			if n, err := ParseSize(d.Journal); err != nil || n < 1<<20 || n > 16<<30 {
				bad(key("journal"), fmt.Sprintf("%q is not a size from 1MiB to 16GiB", d.Journal), `"256MiB" is the default; a size about that of the largest series received`)
			}
		}
		switch w := c.SpoolWatch(d); {
		case d.Spool == "":
			bad(key("spool"), "missing", "name the folder received instances are written into, and add a [[watch]] with that path")
		case !filepath.IsAbs(d.Spool):
			bad(key("spool"), fmt.Sprintf("%q is a relative path", d.Spool), "write it as an absolute path")
		case w < 0:
			bad(key("spool"), fmt.Sprintf("%q is the path of no [[watch]]", d.Spool),
				"add a [[watch]] with this path, its archive and interface: it uploads what the listener receives")
		case c.Watch[w].Group != watch.GroupAuto:
			bad(key("spool"), fmt.Sprintf("%q is watch[%d].path, whose group is %q: a series would not be one image", d.Spool, w, c.Watch[w].Group),
				`set group = "auto" (or leave it out) in that [[watch]], or give the listener a folder of its own`)
		}
	}
}

// normalListen makes equal the spellings of one address: "" and "0.0.0.0"
// and "::" all mean every interface.
func normalListen(host, port string) string {
	switch host {
	case "", "0.0.0.0", "::", "[::]":
		host = "*"
	}
	return net.JoinHostPort(host, port)
}
