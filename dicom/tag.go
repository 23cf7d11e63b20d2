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
