// Package dicom reads DICOM Part-10 files as a stream and rewrites them
// de-identified with Grand Challenge's own de-identification procedure.
//
// # What it reads
//
// A Part-10 file: the 128-byte preamble, "DICM", the meta group (group
// 0002, always explicit VR little endian, delimited by its group length),
// then the data set in the transfer syntax the meta group names: explicit VR
// little endian (and every compressed syntax, which encode their data set
// that way with encapsulated pixel data), implicit VR little endian,
// explicit VR big endian, and deflated explicit VR little endian (inflated
// on the fly). Sequences and items of defined and undefined length, UN
// elements holding implicit VR sequences, and encapsulated pixel data (an
// offset table and fragments) are followed, nested up to 256 deep: deeper
// is a FormatError, so an adversarial file cannot recurse without end, and
// a sequence or item whose delimiter never comes is a file cut short.
// Implicit VR carries no VRs: they come from the PS3.6 data dictionary
// (dict_gen.go, generated from dcmtk's dicom.dic by gendict.go); group
// lengths are UL, private creators LO, and a private attribute whose value
// starts with an item tag is taken as a sequence.
//
// Nothing is read into memory beyond a few KiB per value: longer values are
// copied or skipped as a stream, so a huge declared length neither allocates
// nor passes unnoticed; a file that ends early fails with an error matching
// ErrTruncated that names what was cut.
//
// [ReadHeader] returns the attributes grouping needs (the server's image
// builder, panimg, groups by StudyInstanceUID, StackID else
// SeriesInstanceUID, and SOPClassUID; see [Header.GroupKey]) and stops at the
// pixel data; [Verify] also reads to the end of the file.
//
// # What it rewrites, and what it rejects
//
// [Deidentifier.Rewrite] applies the procedure embedded from
// DIAGNijmegen/rse-grand-challenge-dicom-de-id-procedure (procedure/NOTICE)
// with the semantics of the de-identifier Grand Challenge's clients use
// (gcapi's DICOMImageSetFileCreateStrategy, which calls
// grand_challenge_dicom_de_identifier): per SOP class and attribute, remove,
// keep (cleaning a sequence's items by the same rules), dummy, empty, new
// UID, or reject. UIDs are replaced by a keyed hash of the original, so the
// same file gives the same bytes on every run, the files of a series keep
// one series, and references inside sequences (a referenced instance or
// series) still point where the top level's UIDs went, also when the series
// is forced from the group's key ([WithSeriesKey]). Dummies are valid
// values of the element's VR, and a UN sequence of an explicit VR little
// endian file is written as the SQ it is. The meta group is written anew
// from the rewritten data set: its SOP class and instance UIDs are the
// data set's. dcmtk's dcmdump and dicom3tools' dciodvfy read every file the
// tests rewrite.
//
// It rejects, with a *RejectError carrying the procedure's reason:
//   - a SOP class the procedure has no rules for: the procedure's default,
//     since it cannot know which of that class's attributes identify the
//     patient (version 0.20250708.0 covers CT Image Storage only);
//   - an attribute whose rule is R;
//   - BurnedInAnnotation YES: identifying text in the pixels, which no header
//     rewrite can remove.
//
// It refuses (a *FormatError) what it cannot rewrite faithfully: a data set
// not in ascending tag order (it inserts attributes in order), a data set
// whose SOP class differs from the meta group's or that has none, and
// anything structurally broken.
package dicom
