package dicom

import "sort"

//go:generate go run gendict.go -dic /usr/share/libdcmtk17/dicom.dic -out dict_gen.go

// vrCode is a VR in the generated dictionary, one byte a row.
type vrCode uint8

const (
	vrNone vrCode = iota
	vrAE
	vrAS
	vrAT
	vrCS
	vrDA
	vrDS
	vrDT
	vrFD
	vrFL
	vrIS
	vrLO
	vrLT
	vrOB
	vrOD
	vrOF
	vrOL
	vrOV
	vrOW
	vrPN
	vrSH
	vrSL
	vrSQ
	vrSS
	vrST
	vrSV
	vrTM
	vrUC
	vrUI
	vrUL
	vrUN
	vrUR
	vrUS
	vrUT
	vrUV
)

var vrNames = [...]string{
	vrAE: "AE", vrAS: "AS", vrAT: "AT", vrCS: "CS", vrDA: "DA", vrDS: "DS",
	vrDT: "DT", vrFD: "FD", vrFL: "FL", vrIS: "IS", vrLO: "LO", vrLT: "LT",
	vrOB: "OB", vrOD: "OD", vrOF: "OF", vrOL: "OL", vrOV: "OV", vrOW: "OW",
	vrPN: "PN", vrSH: "SH", vrSL: "SL", vrSQ: "SQ", vrSS: "SS", vrST: "ST",
	vrSV: "SV", vrTM: "TM", vrUC: "UC", vrUI: "UI", vrUL: "UL", vrUN: "UN",
	vrUR: "UR", vrUS: "US", vrUT: "UT", vrUV: "UV",
}

type dictEntry struct {
	tag Tag
	vr  vrCode
}

// dictMask matches the tags t with t&mask == tag.
type dictMask struct {
	mask, tag Tag
	vr        vrCode
}

// dictVR is the VR of t in the PS3.6 data dictionary (dict_gen.go), the
// VR an implicit VR data set leaves out: UL for every group length
// (gggg,0000), LO for private creators (odd group, element 0010-00FF), and
// "" for a private attribute, which only its creator's dictionary knows.
func dictVR(t Tag) string {
	if t.Element() == 0 {
		return "UL"
	}
	if t.Group()%2 == 1 {
		if t.Element() >= 0x10 && t.Element() <= 0xFF {
			return "LO"
		}
		return ""
	}
	i := sort.Search(len(dictTags), func(i int) bool { return dictTags[i].tag >= t })
	if i < len(dictTags) && dictTags[i].tag == t {
		return vrNames[dictTags[i].vr]
	}
	switch t {
	case 0x3002010D, 0x3002010E, 0x30020110:
		// Sequences added to PS3.6 after the 2022b edition dicom.dic
		// lists, which the procedure keeps or empties.
		return "SQ"
	}
	for _, m := range dictMasks {
		if t&m.mask == m.tag {
			return vrNames[m.vr]
		}
	}
	return ""
}
