package dicom

import "fmt"

// Tag is a DICOM attribute tag, group<<16 | element.
type Tag uint32

// Group is the tag's group number.
func (t Tag) Group() uint16 { return uint16(t >> 16) }

// Element is the tag's element number.
func (t Tag) Element() uint16 { return uint16(t) }

// String formats t as the standard writes it, "(0010,0010)".
func (t Tag) String() string { return fmt.Sprintf("(%04X,%04X)", uint16(t>>16), uint16(t)) }

// Tags this package reads or writes itself.
const (
	tagMetaGroupLength      Tag = 0x00020000
	tagMetaVersion          Tag = 0x00020001
	tagMediaSOPClass        Tag = 0x00020002
	tagMediaSOPInstance     Tag = 0x00020003
	tagTransferSyntax       Tag = 0x00020010
	tagImplementationClass  Tag = 0x00020012
	tagImplementationName   Tag = 0x00020013
	tagSOPClass             Tag = 0x00080016
	tagSOPInstance          Tag = 0x00080018
	tagSeriesDescription    Tag = 0x0008103E
	tagPatientIdentityRemov Tag = 0x00120062
	tagDeidentMethod        Tag = 0x00120063
	tagStudyUID             Tag = 0x0020000D
	tagSeriesUID            Tag = 0x0020000E
	tagSeriesNumber         Tag = 0x00200011
	tagInstanceNumber       Tag = 0x00200013
	tagFrameContentSeq      Tag = 0x00209111
	tagStackID              Tag = 0x00209056
	tagTemporalPosIndex     Tag = 0x00209128
	tagNumberOfFrames       Tag = 0x00280008
	tagRows                 Tag = 0x00280010
	tagBurnedInAnnotation   Tag = 0x00280301
	tagSharedFGSeq          Tag = 0x52009229
	tagPerFrameFGSeq        Tag = 0x52009230
	tagFloatPixelData       Tag = 0x7FE00008
	tagDoublePixelData      Tag = 0x7FE00009
	tagPixelData            Tag = 0x7FE00010
	tagItem                 Tag = 0xFFFEE000
	tagItemDelim            Tag = 0xFFFEE00D
	tagSeqDelim             Tag = 0xFFFEE0DD
)

// Transfer syntax UIDs whose data set encoding this package knows. Every
// other transfer syntax (the JPEG, RLE, … family) encodes its data set as
// explicit VR little endian with encapsulated pixel data.
const (
	TSImplicitLE = "1.2.840.10008.1.2"
	TSExplicitLE = "1.2.840.10008.1.2.1"
	TSDeflatedLE = "1.2.840.10008.1.2.1.99"
	TSExplicitBE = "1.2.840.10008.1.2.2"
)

// CTImageStorage is the SOP class the embedded procedure accepts today.
const CTImageStorage = "1.2.840.10008.5.1.4.1.1.2"

// longVR reports whether an explicit VR element of this VR has a 2-byte
// reserved field and a 4-byte length (PS3.5 7.1.2).
func longVR(vr string) bool {
	switch vr {
	case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
		return true
	}
	return false
}

// knownVR is the VR of the attributes whose VR this package needs when the
// transfer syntax does not carry it (implicit VR): sequences, so that a kept
// or replaced sequence is walked and cleaned rather than copied as bytes,
// and the attributes the procedure replaces with a dummy, an empty value or
// a new UID, whose replacement depends on the VR. Values from the DICOM
// standard's data dictionary (PS3.6). Attributes not listed here are "UN"
// in implicit VR, as for any reader without the full dictionary; a test
// checks that every D, Z and U attribute of the embedded procedure is here.
var knownVR = map[Tag]string{
	// Code sequence item content (kept or replaced inside sequences).
	0x00080100: "SH", 0x00080102: "SH", 0x00080103: "SH", 0x00080104: "LO",
	0x00080105: "CS", 0x00080106: "DT", 0x00080107: "DT", 0x0008010A: "CS",
	0x0008010B: "CS", 0x0008010C: "UI", 0x0008010D: "UI", 0x0008010E: "UR",
	0x0008010F: "CS", 0x00080117: "UI", 0x00080118: "UI", 0x00080119: "UC",
	0x00080120: "UR", 0x00080121: "SQ",
	// D, Z and U attributes of the procedure.
	0x00080014: "UI", 0x00080017: "UI", 0x00080018: "UI", 0x00080020: "DA",
	0x00080030: "TM", 0x00080050: "SH", 0x00080053: "CS", 0x00080080: "LO",
	0x00080082: "SQ", 0x00080090: "PN", 0x0008009C: "PN", 0x00081155: "UI",
	0x00083010: "UI", 0x00100010: "PN", 0x00100020: "LO", 0x00100030: "DA",
	0x00100035: "CS", 0x00100040: "CS", 0x00180010: "LO", 0x00181000: "LO",
	0x00181002: "UI", 0x0018100B: "UI", 0x00181020: "LO", 0x00189367: "UC",
	0x00189369: "DT", 0x0018936A: "DT", 0x00189371: "UC", 0x0020000D: "UI",
	0x0020000E: "UI", 0x00200010: "SH", 0x00200011: "IS", 0x00200012: "IS",
	0x00200052: "UI", 0x00200200: "UI", 0x00201040: "LO", 0x00400031: "UT",
	0x00401101: "SQ", 0x0040A120: "DT", 0x0040A121: "DA", 0x0040A122: "TM",
	0x0040A123: "PN", 0x0040A124: "UI", 0x0040A160: "UT", 0x0040E021: "SQ",
	0x0040E022: "SQ", 0x0040E023: "SQ", 0x0040E024: "SQ", 0x0040E025: "SQ",
	0x00880130: "SH", 0x00880140: "UI", 0x04000100: "UI", 0x04000105: "DT",
	0x04000115: "OB", 0x04000562: "DT", 0x04000563: "LO", 0x04000564: "LO",
	0x04000565: "CS", 0x30020110: "SQ", 0x300A0602: "US", 0x300A060E: "US",
	0x300A0611: "LO", 0x300A0615: "LO", 0x300A065B: "SQ", 0x300A0700: "UI",
	0x300A0790: "SQ", 0x300A0793: "SQ", 0x3010001A: "LO", 0x3010001B: "UC",
	0x3010001C: "CS", 0x3010002D: "LO", 0x30100043: "ST",
	// Sequences the procedure keeps (their items are cleaned).
	0x00081199: "SQ", 0x00100215: "SQ", 0x00102202: "SQ", 0x00102293: "SQ",
	0x00102294: "SQ", 0x00102296: "SQ", 0x00120064: "SQ", 0x00181272: "SQ",
	0x00189304: "SQ", 0x00189312: "SQ", 0x00189321: "SQ", 0x00189325: "SQ",
	0x00189362: "SQ", 0x00189364: "SQ", 0x00189365: "SQ", 0x0018936F: "SQ",
	0x00189379: "SQ", 0x0018937D: "SQ", 0x0018990C: "SQ", 0x0018990D: "SQ",
	0x004008EA: "SQ", 0x0040A043: "SQ", 0x0040A168: "SQ", 0x0066002F: "SQ",
	0x04000500: "SQ", 0x3002010D: "SQ", 0x3002010E: "SQ", 0x300A078D: "SQ",
	0x300A0791: "SQ", 0x3010002E: "SQ",
	// Sequences and values the header reader follows.
	tagSharedFGSeq: "SQ", tagPerFrameFGSeq: "SQ", tagFrameContentSeq: "SQ",
	0x00400275: "SQ", 0x00082112: "SQ", 0x00081140: "SQ", 0x00081115: "SQ",
	0x00880200: "SQ", 0x00081250: "SQ", 0x00082218: "SQ", 0x00540016: "SQ",
	tagStackID: "SH", tagTemporalPosIndex: "UL", tagInstanceNumber: "IS",
	tagNumberOfFrames: "IS", tagBurnedInAnnotation: "CS", tagSOPClass: "UI",
	tagSeriesDescription: "LO", tagPatientIdentityRemov: "CS", tagDeidentMethod: "LO",
	tagPixelData: "OW",
}
