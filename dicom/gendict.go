//go:build ignore

// gendict writes dict_gen.go, the VR of every attribute of the DICOM PS3.6
// data dictionary, from dcmtk's dicom.dic (Debian package dcmtk):
//
//	go run gendict.go -dic /usr/share/libdcmtk17/dicom.dic -out dict_gen.go
//
// Only tags, VRs and keywords are taken: facts of the standard, which
// dcmtk's file lists. Entries with one tag go into a sorted table; ranges
// over a group's or an element's low byte, (60xx,3000) or (0020,31xx), go
// into a table of masks. The private and generic entries (group lengths,
// private creators) are rules in dict.go, not table rows.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"go/format"
	"log"
	"os"
	"slices"
	"strconv"
	"strings"
)

// vrOf maps dcmtk's VR column to the VR an implicit VR reader takes.
// dcmtk writes multi-VR attributes in lower case: xs (US or SS), ox and px
// (OB or OW: OW in implicit VR, PS3.5 A.1), lt (LUT data, US or SS or OW:
// OW), up (a UL offset), na (items and delimiters: no VR).
func vrOf(vr string) (string, bool, error) {
	switch vr {
	case "xs":
		return "US", true, nil
	case "ox", "px", "lt":
		return "OW", true, nil
	case "up":
		return "UL", true, nil
	case "na":
		return "", false, nil
	}
	switch vr {
	case "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT",
		"OB", "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST",
		"SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV":
		return vr, true, nil
	}
	return "", false, fmt.Errorf("unknown VR %q", vr)
}

type entry struct {
	tag     uint32
	vr      string
	keyword string
}

type mask struct {
	mask, tag uint32
	vr        string
	keyword   string
}

// part parses one half of a tag, "0010", "6000-60FF" (even values only),
// "0009-o-FFFF" (odd) or "0000-u-FFFF" (all).
func part(s string) (lo, hi uint16, parity string, err error) {
	fields := strings.Split(s, "-")
	switch len(fields) {
	case 1:
		v, err := strconv.ParseUint(s, 16, 16)
		return uint16(v), uint16(v), "", err
	case 2:
		fields = []string{fields[0], "e", fields[1]}
	case 3:
	default:
		return 0, 0, "", fmt.Errorf("bad tag part %q", s)
	}
	a, err := strconv.ParseUint(fields[0], 16, 16)
	if err != nil {
		return 0, 0, "", err
	}
	b, err := strconv.ParseUint(fields[2], 16, 16)
	if err != nil {
		return 0, 0, "", err
	}
	return uint16(a), uint16(b), fields[1], nil
}

// rangeMask expresses a range over the low byte (lo = xx00, hi = xxFF) as
// a mask of 16 bits: even values only (dcmtk's default) keep bit 0.
func rangeMask(lo, hi uint16, parity string) (uint16, bool) {
	if lo == hi && parity == "" {
		return 0xFFFF, true
	}
	if lo&0xFF != 0 || hi != lo|0xFF {
		return 0, false
	}
	switch parity {
	case "e":
		return 0xFF01, true
	case "u":
		return 0xFF00, true
	}
	return 0, false
}

func main() {
	dic := flag.String("dic", "/usr/share/libdcmtk17/dicom.dic", "dcmtk's data dictionary")
	out := flag.String("out", "dict_gen.go", "Go file to write")
	source := flag.String("source", "dcmtk 3.6.7", "the dictionary's origin, named in the output")
	flag.Parse()
	f, err := os.Open(*dic)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	exact := map[uint32]entry{}
	var masks []mask
	edition := "edition not stated"
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if text == "" || text[0] == '#' {
			if _, e, ok := strings.Cut(text, "Generated automatically from DICOM PS 3.6-"); ok {
				edition = "edition " + strings.Fields(e)[0]
			}
			continue
		}
		cols := strings.Split(text, "\t")
		if len(cols) < 5 {
			log.Fatalf("%s:%d: %d columns, want 5", *dic, line, len(cols))
		}
		tag, vrCol, keyword, version := cols[0], cols[1], cols[2], cols[4]
		if !strings.HasPrefix(version, "DICOM") {
			// PRIVATE, GENERIC, ILLEGAL: group lengths and private
			// creators, which dict.go handles by rule.
			continue
		}
		vr, ok, err := vrOf(vrCol)
		if err != nil {
			log.Fatalf("%s:%d: %v", *dic, line, err)
		}
		if !ok {
			continue
		}
		if len(tag) < 11 || tag[0] != '(' || tag[len(tag)-1] != ')' {
			log.Fatalf("%s:%d: bad tag %q", *dic, line, tag)
		}
		g, e, found := strings.Cut(tag[1:len(tag)-1], ",")
		if !found {
			log.Fatalf("%s:%d: bad tag %q", *dic, line, tag)
		}
		glo, ghi, gpar, err := part(g)
		if err != nil {
			log.Fatalf("%s:%d: %v", *dic, line, err)
		}
		elo, ehi, epar, err := part(e)
		if err != nil {
			log.Fatalf("%s:%d: %v", *dic, line, err)
		}
		t := uint32(glo)<<16 | uint32(elo)
		if gpar == "" && epar == "" {
			exact[t] = entry{tag: t, vr: vr, keyword: keyword} // later entries override
			continue
		}
		gm, ok1 := rangeMask(glo, ghi, gpar)
		em, ok2 := rangeMask(elo, ehi, epar)
		if !ok1 || !ok2 {
			log.Fatalf("%s:%d: range %s is not a low-byte range", *dic, line, tag)
		}
		masks = append(masks, mask{mask: uint32(gm)<<16 | uint32(em), tag: t, vr: vr, keyword: keyword})
	}
	if err := sc.Err(); err != nil {
		log.Fatal(err)
	}
	entries := make([]entry, 0, len(exact))
	for _, e := range exact {
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(a, b entry) int { return int(int64(a.tag) - int64(b.tag)) })

	var b bytes.Buffer
	fmt.Fprintf(&b, "// Code generated by gendict.go from %s's dicom.dic; DO NOT EDIT.\n\n", *source)
	fmt.Fprintf(&b, `package dicom

// The DICOM PS3.6 data dictionary (tags and VRs, which are facts of the
// standard), as listed in %s's dicom.dic (%s): %d attributes, %d
// repeating groups or element ranges. dicom.dic is Copyright (C) 1994-2022 OFFIS e.V.,
// distributed under dcmtk's BSD-style licence (its COPYRIGHT file); only
// tags, VRs and keywords are taken from it. Attributes with more than one
// VR take the one an implicit VR reader uses: US for US or SS, OW for OB
// or OW and for LUT data.

// dictTags is sorted by tag, for a binary search.
var dictTags = [...]dictEntry{
`, *source, edition, len(entries), len(masks))
	for _, e := range entries {
		fmt.Fprintf(&b, "\t{0x%08X, vr%s}, // %s\n", e.tag, e.vr, e.keyword)
	}
	b.WriteString("}\n\n// dictMasks are the repeating groups and element ranges, tried in order\n// when dictTags has no entry.\nvar dictMasks = [...]dictMask{\n")
	for _, m := range masks {
		fmt.Fprintf(&b, "\t{0x%08X, 0x%08X, vr%s}, // %s\n", m.mask, m.tag, m.vr, m.keyword)
	}
	b.WriteString("}\n")
	src, err := format.Source(b.Bytes())
	if err != nil {
		log.Fatalf("format: %v", err)
	}
	if err := os.WriteFile(*out, src, 0o644); err != nil {
		log.Fatal(err)
	}
}
