package dicom

import (
	"bufio"
	"bytes"
	"compress/flate"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"io"
	"math/big"
	"strings"
)

// RejectError is a file the procedure refuses: a SOP class it has no rules
// for, an attribute whose rule is R, or burned-in annotation. Justification
// is the procedure's reason, word for word where it gives one.
type RejectError struct {
	// Tag is the attribute that caused the rejection, 0 for the SOP class.
	Tag           Tag
	Justification string
}

// Error gives the procedure's reason and the attribute, if one.
func (e *RejectError) Error() string {
	if e.Tag == 0 {
		return "dicom file rejected by the de-identification procedure: " + e.Justification
	}
	return fmt.Sprintf("dicom file rejected by the de-identification procedure: %s %s", e.Tag, e.Justification)
}

// Deidentifier rewrites DICOM files with a de-identification procedure.
// It is safe for concurrent use.
type Deidentifier struct {
	secret    []byte
	proc      *Procedure
	seriesKey string
	forceSer  bool
	method    string
}

// Option configures a Deidentifier.
type Option func(*Deidentifier)

// WithProcedure uses p instead of the embedded Grand Challenge procedure
// (tests use it for actions the embedded one does not use, such as R).
func WithProcedure(p *Procedure) Option { return func(d *Deidentifier) { d.proc = p } }

// WithSeriesKey gives every file rewritten the SeriesInstanceUID derived
// from key (the group's series key) instead of the one derived from its own,
// so the files of one group still form one image on the server after the
// rewrite. A file without a SeriesInstanceUID gets one. References to the
// file's own original series, at any depth (a ReferencedSeriesSequence),
// get the same new UID, so that they still resolve.
func WithSeriesKey(key string) Option {
	return func(d *Deidentifier) { d.seriesKey, d.forceSer = key, true }
}

// minSecret is the shortest secret accepted: the UIDs are only as hard to
// reverse as the secret is to guess.
const minSecret = 16

// NewDeidentifier returns a Deidentifier whose new UIDs are a keyed hash of
// the originals under secret, which the caller keeps (in its own file) so
// that the same input gives the same bytes on every run.
func NewDeidentifier(secret []byte, opts ...Option) (*Deidentifier, error) {
	if len(secret) < minSecret {
		return nil, fmt.Errorf("de-identification secret is %d bytes, want at least %d", len(secret), minSecret)
	}
	d := &Deidentifier{secret: append([]byte(nil), secret...)}
	for _, o := range opts {
		o(d)
	}
	if d.proc == nil {
		p, err := DefaultProcedure()
		if err != nil {
			return nil, err
		}
		d.proc = p
	}
	d.method = "grand-challenge-dicom-de-id-procedure:" + d.proc.Version + " (gcingest)"
	return d, nil
}

// WithSeriesKey returns a copy of d that forces the series as the option of
// the same name does; it shares d's secret and procedure.
func (d *Deidentifier) WithSeriesKey(key string) *Deidentifier {
	c := *d
	c.seriesKey, c.forceSer = key, true
	return &c
}

// Method is the text added to DeidentificationMethod (0012,0063).
func (d *Deidentifier) Method() string { return d.method }

// UID returns the UID that replaces uid: "2.25." and the decimal of the
// first 128 bits of HMAC-SHA256(secret, uid), a UUID-sized integer as
// PS3.5 B.2 allows under 2.25, at most 44 characters.
func (d *Deidentifier) UID(uid string) string {
	m := hmac.New(sha256.New, d.secret)
	m.Write([]byte("gcingest dicom uid\x00"))
	m.Write([]byte(uid))
	sum := m.Sum(nil)
	return "2.25." + new(big.Int).SetBytes(sum[:16]).String()
}

// SeriesUID is the SeriesInstanceUID every file gets when d forces one
// (WithSeriesKey), else "".
func (d *Deidentifier) SeriesUID() string {
	if !d.forceSer {
		return ""
	}
	return d.UID("series key\x00" + d.seriesKey)
}

// Result describes a rewritten file.
type Result struct {
	TransferSyntaxUID string
	SOPClassUID       string
	// The new UIDs as written.
	StudyInstanceUID  string
	SeriesInstanceUID string
	SOPInstanceUID    string
	// Written is the number of bytes written to dst.
	Written int64
}

// implementationUID names gcingest as the writer of rewritten files, in
// (0002,0012); a fixed 2.25 UID derived from the name.
var implementationUID = func() string {
	sum := sha256.Sum256([]byte("gcingest dicom rewriter"))
	return "2.25." + new(big.Int).SetBytes(sum[:16]).String()
}()

// Rewrite reads a DICOM Part-10 file from src and writes it de-identified
// to dst, in the same transfer syntax, as a stream: values are read into
// memory only up to a few KiB, pixel data is copied, not decoded, so memory
// stays bounded whatever the file size. The same input and secret give the
// same bytes.
//
// Per attribute, at every depth, it applies the procedure's rule for the
// file's SOP class: X removes, K keeps (a sequence's items are cleaned by
// the same rules), D replaces with a dummy value of the VR (a sequence's
// elements all with dummies), Z with an empty value (a dummy for VRs that
// cannot be empty; an empty sequence), U with UID(original), and R rejects
// the file. A SOP class the procedure does not list is rejected (its
// default), and so is BurnedInAnnotation YES. PatientIdentityRemoved
// (0012,0062) YES and DeidentificationMethod (0012,0063) are added, as Grand
// Challenge's clients do. Group lengths (retired) are dropped; sequences and
// items are written with undefined length, so no length needs knowing
// before its content; the meta group is written anew from the rewritten
// data set (preamble zeroed, MediaStorageSOPClassUID and
// MediaStorageSOPInstanceUID the data set's SOPClassUID and rewritten
// SOPInstanceUID, source and private entries dropped) with its group length
// computed.
//
// The meta group comes first but follows from SOPInstanceUID (0008,0018),
// and references to the series may come before SeriesInstanceUID
// (0020,000E): Rewrite reads ahead to both first. It seeks back when src is
// an io.Seeker (an *os.File); any other src is held in memory up to them,
// at most 16 MiB.
//
// A rejected file returns a *RejectError; an unreadable one a *FormatError
// or an error matching ErrTruncated. On any error dst holds a partial file
// the caller must discard.
func (d *Deidentifier) Rewrite(dst io.Writer, src io.Reader) (Result, error) {
	src, top, err := lookAhead(src)
	if err != nil {
		return Result{}, err
	}
	cw := &countWriter{w: dst}
	r := &rewriter{d: d, in: newInput(src), out: bufio.NewWriterSize(cw, bufSize), top: top}
	err = r.run(cw)
	r.res.Written = cw.n
	return r.res, err
}

// maxLookAhead bounds what Rewrite holds of a source it cannot seek.
const maxLookAhead = 16 << 20

// lookAhead reads src's top-level UIDs and returns a reader of src from
// its start again.
func lookAhead(src io.Reader) (io.Reader, topUIDs, error) {
	if sk, ok := src.(io.ReadSeeker); ok {
		if start, err := sk.Seek(0, io.SeekCurrent); err == nil {
			top := readTopUIDs(sk)
			if _, err := sk.Seek(start, io.SeekStart); err != nil {
				return nil, top, fmt.Errorf("seek back to the start of the dicom file: %w", err)
			}
			return sk, top, nil
		}
	}
	var held bytes.Buffer
	top := readTopUIDs(io.TeeReader(io.LimitReader(src, maxLookAhead), &held))
	return io.MultiReader(&held, src), top, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type rewriter struct {
	d       *Deidentifier
	in      *input
	out     *bufio.Writer
	s       syntax
	rules   *SOPClassRules
	metaSOP string
	sawSOP  bool
	pending []pendingElem
	res     Result
	// top is what the look-ahead found; metaInstance the
	// MediaStorageSOPInstanceUID written, which the data set must match.
	top          topUIDs
	metaInstance string
}

// pendingElem is an element the rewriter adds at the top level, written in
// tag order before the first element after it.
type pendingElem struct {
	tag   Tag
	vr    string
	value string
}

func (r *rewriter) run(cw *countWriter) error {
	if err := r.in.readPrefix(); err != nil {
		return err
	}
	meta, err := readMeta(r.in)
	if err != nil {
		return err
	}
	ts := meta.get(tagTransferSyntax)
	r.res.TransferSyntaxUID = ts
	s, deflated := syntaxOf(ts)
	r.s = s
	r.metaSOP = meta.get(tagMediaSOPClass)
	if r.metaSOP == "" {
		return &FormatError{Offset: r.in.off, Msg: "meta group has no Media Storage SOP Class UID (0002,0002)"}
	}
	r.res.SOPClassUID = r.metaSOP
	rules, ok := r.d.proc.SOPClass[r.metaSOP]
	if !ok {
		if r.d.proc.Default.Action != Keep {
			j := r.d.proc.Default.Justification
			if j == "" {
				j = "SOP Class " + r.metaSOP + " is not supported"
			}
			return &RejectError{Justification: j + " (SOP Class " + r.metaSOP + ")"}
		}
		rules = &SOPClassRules{Default: Rule{Action: Keep}}
	}
	r.rules = rules
	if err := r.writeMeta(meta); err != nil {
		return err
	}
	r.pending = []pendingElem{
		{tag: tagPatientIdentityRemov, vr: "CS", value: "YES"},
		{tag: tagDeidentMethod, vr: "LO", value: r.d.method},
	}
	if r.d.forceSer {
		r.pending = append(r.pending, pendingElem{tag: tagSeriesUID, vr: "UI", value: r.d.SeriesUID()})
		r.res.SeriesInstanceUID = r.d.SeriesUID()
	}
	var fw *flate.Writer
	if deflated {
		// The data set is one raw deflate stream (PS3.5 A.5).
		if err := r.out.Flush(); err != nil {
			return err
		}
		fw, _ = flate.NewWriter(cw, flate.DefaultCompression)
		r.out.Reset(fw)
		r.in = newInput(flate.NewReader(r.in.br))
	}
	if err := r.topLevel(); err != nil {
		return err
	}
	if err := r.out.Flush(); err != nil {
		return err
	}
	if fw != nil {
		return fw.Close()
	}
	return nil
}

// writeMeta writes the preamble and a new meta group.
func (r *rewriter) writeMeta(m metaGroup) error {
	var b []byte
	version, ok := m.raw(tagMetaVersion)
	if !ok {
		version = []byte{0, 1}
	}
	add := func(t Tag, vr string, v []byte) {
		v = pad(v, vr)
		b = appendHeader(b, explicitLE, t, vr, uint32(len(v)))
		b = append(b, v...)
	}
	add(tagMetaVersion, "OB", version)
	add(tagMediaSOPClass, "UI", []byte(r.metaSOP))
	r.metaInstance = r.newSOPInstance(m)
	if r.metaInstance != "" {
		add(tagMediaSOPInstance, "UI", []byte(r.metaInstance))
	}
	add(tagTransferSyntax, "UI", []byte(m.get(tagTransferSyntax)))
	add(tagImplementationClass, "UI", []byte(implementationUID))
	add(tagImplementationName, "SH", []byte("GCINGEST"))
	var head [prefixLen]byte
	copy(head[preambleLen:], "DICM")
	r.out.Write(head[:])
	gl := appendHeader(nil, explicitLE, tagMetaGroupLength, "UL", 4)
	gl = explicitLE.order().AppendUint32(gl, uint32(len(b)))
	r.out.Write(gl)
	_, err := r.out.Write(b)
	return err
}

// newSOPInstance is the SOPInstanceUID the rewritten data set will hold,
// from the look-ahead and the procedure's rule for it. When the data set
// has none left, the meta group's own is mapped: the meta group needs one.
func (r *rewriter) newSOPInstance(m metaGroup) string {
	if r.top.sopInstance != "" {
		switch r.rule(scope{top: true}, tagSOPInstance).Action {
		case NewUID:
			return r.mapUIDs(r.top.sopInstance)
		case Keep:
			return r.top.sopInstance
		case Dummy, Empty:
			v, _ := dummyValue("UI")
			return string(v)
		}
	}
	if inst := m.get(tagMediaSOPInstance); inst != "" {
		return r.d.UID(inst)
	}
	return ""
}

// mapUIDs maps each UID of a (multi-valued) UI value: the file's own
// series to the forced one under WithSeriesKey, any other to UID(original).
func (r *rewriter) mapUIDs(v string) string {
	parts := strings.Split(trimText([]byte(v)), `\`)
	for i, p := range parts {
		p = strings.Trim(p, "\x00 ")
		if r.d.forceSer && p != "" && p == r.top.series {
			parts[i] = r.d.SeriesUID()
			continue
		}
		parts[i] = r.d.UID(p)
	}
	return strings.Join(parts, `\`)
}

// appendHeader appends an element header in syntax s.
func appendHeader(b []byte, s syntax, t Tag, vr string, length uint32) []byte {
	o := s.order()
	b = o.AppendUint16(b, t.Group())
	b = o.AppendUint16(b, t.Element())
	if s.implicit || t.Group() == 0xFFFE {
		return o.AppendUint32(b, length)
	}
	b = append(b, vr...)
	if longVR(vr) {
		b = append(b, 0, 0)
		return o.AppendUint32(b, length)
	}
	return o.AppendUint16(b, uint16(length))
}

func (r *rewriter) header(s syntax, t Tag, vr string, length uint32) {
	var buf [12]byte
	r.out.Write(appendHeader(buf[:0], s, t, vr, length))
}

// writeValue writes a whole element with value v (padded to even length).
func (r *rewriter) writeValue(s syntax, t Tag, vr string, v []byte) error {
	v = pad(v, vr)
	if !s.implicit && !longVR(vr) && len(v) > 0xFFFF {
		return &FormatError{Offset: r.in.off, Msg: fmt.Sprintf("value of %d bytes for %s does not fit VR %s", len(v), t, vr)}
	}
	r.header(s, t, vr, uint32(len(v)))
	_, err := r.out.Write(v)
	return err
}

// pad makes v even-length with the VR's padding byte (PS3.5 6.2).
func pad(v []byte, vr string) []byte {
	if len(v)%2 == 0 {
		return v
	}
	p := byte(' ')
	switch vr {
	case "UI", "OB", "UN", "OD", "OF", "OL", "OV", "OW":
		p = 0
	}
	return append(v[:len(v):len(v)], p)
}

// scope is the rules applying to the elements of one data set, and the
// syntax they are written in: the one they are read in, except the items
// of a UN sequence in explicit VR little endian, read in implicit VR (PS3.5
// 6.2.2) and written as an SQ's, with VRs from the dictionary.
type scope struct {
	top   bool
	dummy bool // inside a sequence replaced by D: every element is D
	w     syntax
}

func (r *rewriter) rule(c scope, t Tag) Rule {
	if t.Element() == 0 {
		// Group lengths are retired and would be wrong after the rewrite.
		return Rule{Action: Remove}
	}
	if c.dummy {
		return Rule{Action: Dummy, Justification: "parent sequence was replaced"}
	}
	return r.rules.Rule(t)
}

func (r *rewriter) flushPending(before Tag) error {
	for len(r.pending) > 0 && r.pending[0].tag < before {
		p := r.pending[0]
		r.pending = r.pending[1:]
		if err := r.writeValue(r.s, p.tag, p.vr, []byte(p.value)); err != nil {
			return err
		}
	}
	return nil
}

func (r *rewriter) dropPending(t Tag) {
	for i, p := range r.pending {
		if p.tag == t {
			r.pending = append(r.pending[:i:i], r.pending[i+1:]...)
			return
		}
	}
}

// topLevel rewrites the data set to the end of the input.
func (r *rewriter) topLevel() error {
	in, s := r.in, r.s
	var last Tag
	first, hasRows, hasPixels := true, false, false
	for {
		start := in.off
		e, err := in.readElement(s)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if e.tag.Group() == 0xFFFE {
			return &FormatError{Offset: start, Msg: fmt.Sprintf("item tag %s at top level", e.tag)}
		}
		if !first && e.tag <= last {
			// The rewriter adds elements in tag order; it cannot place
			// them in a data set that is not in order.
			return &FormatError{Offset: start, Msg: fmt.Sprintf("element %s out of ascending tag order after %s", e.tag, last)}
		}
		first, last = false, e.tag
		switch e.tag {
		case tagRows:
			hasRows = true
		case tagPixelData, tagFloatPixelData, tagDoublePixelData:
			hasPixels = true
		}
		if err := r.flushPending(e.tag); err != nil {
			return err
		}
		if err := r.topElement(e); err != nil {
			return err
		}
	}
	if err := r.flushPending(0xFFFFFFFF); err != nil {
		return err
	}
	if !r.sawSOP {
		return &FormatError{Offset: in.off, Msg: "data set has no SOP Class UID (0008,0016)"}
	}
	if hasRows && !hasPixels {
		// As Verify judges it: an image header without its pixels is a
		// file cut short, not one to send.
		return &TruncatedError{What: "pixel data (the file ends after the image header)", Offset: in.off}
	}
	return nil
}

// topElement handles the elements of the top level the rewriter looks at
// itself, and passes the others to element.
func (r *rewriter) topElement(e element) error {
	in, s := r.in, r.s
	c := scope{top: true, w: s}
	if rule := r.rule(c, e.tag); rule.Action == Reject {
		return r.apply(e, s, c, 0, nil)
	}
	small := !e.undefinedLength() && e.length <= maxValue
	switch e.tag {
	case tagSOPClass, tagBurnedInAnnotation, tagDeidentMethod:
		if !small {
			return &FormatError{Offset: in.off, Msg: fmt.Sprintf("element %s of %d bytes", e.tag, e.length)}
		}
		b, err := in.value(e.length, e.tag)
		if err != nil {
			return err
		}
		v := trimText(b)
		switch e.tag {
		case tagSOPClass:
			r.sawSOP = true
			if v != r.metaSOP {
				return &FormatError{Offset: in.off, Msg: fmt.Sprintf("SOP Class UID %q differs from the meta group's %q", v, r.metaSOP)}
			}
		case tagBurnedInAnnotation:
			if strings.EqualFold(v, "YES") {
				return &RejectError{Tag: e.tag, Justification: "DICOM file contains burned in annotations"}
			}
		case tagDeidentMethod:
			// The method of this rewrite is added to what the procedure
			// leaves of the attribute, as Grand Challenge's de-identifier
			// does: the kept methods, a dummy, or nothing.
			r.dropPending(e.tag)
			switch r.rule(c, e.tag).Action {
			case Keep:
			case Dummy:
				d, _ := dummyValue("LO")
				v = string(d)
			default:
				v = ""
			}
			if v != "" {
				v += `\`
			}
			return r.writeValue(s, e.tag, vrOr(e, "LO"), []byte(v+r.d.method))
		}
		return r.apply(e, s, c, 0, b)
	case tagPatientIdentityRemov:
		// Replaced by the one added.
		if err := in.skipValue(e, s, 0); err != nil {
			return err
		}
		return r.flushPending(e.tag + 1)
	case tagSeriesUID:
		if r.d.forceSer {
			if !small {
				return &FormatError{Offset: in.off, Msg: fmt.Sprintf("element %s of %d bytes", e.tag, e.length)}
			}
			b, err := in.value(e.length, e.tag)
			if err != nil {
				return err
			}
			if v := trimText(b); v != r.top.series {
				// The references before it were mapped from what
				// the look-ahead found; they would not resolve.
				return &FormatError{Offset: in.off, Msg: fmt.Sprintf("SeriesInstanceUID %q not found reading ahead (found %q)", v, r.top.series)}
			}
			return r.flushPending(e.tag + 1)
		}
	}
	return r.apply(e, s, c, 0, nil)
}

// vrOr is e's VR, or def in implicit VR.
func vrOr(e element, def string) string {
	if e.vr != "" {
		return e.vr
	}
	return def
}

// vrOf is the VR a replacement for e is written with: as encoded, else
// (implicit VR, or UN written by software that did not know the attribute)
// the data dictionary's, else UN, as for a private attribute.
func vrOf(e element) string {
	if e.vr != "" && e.vr != "UN" {
		return e.vr
	}
	if vr := dictVR(e.tag); vr != "" {
		return vr
	}
	return "UN"
}

// apply applies the procedure to element e whose header was just read; its
// value is next in the input, or in val when the caller already read it.
func (r *rewriter) apply(e element, s syntax, c scope, depth int, val []byte) error {
	in := r.in
	rule := r.rule(c, e.tag)
	skip := func() error {
		if val != nil {
			return nil
		}
		return in.skipValue(e, s, depth)
	}
	seq := val == nil && in.isSequence(e, s)
	switch rule.Action {
	case Reject:
		j := rule.Justification
		if j == "" {
			j = "attribute not allowed"
		}
		return &RejectError{Tag: e.tag, Justification: j}
	case Remove:
		return skip()
	case Keep:
		switch {
		case seq:
			return r.sequence(e, s, c, depth)
		case val != nil:
			return r.writeValue(c.w, e.tag, vrOf(e), val)
		case e.undefinedLength() && e.tag == tagPixelData:
			return r.fragments(e, s, c.w)
		case e.undefinedLength():
			return &FormatError{Offset: in.off, Msg: fmt.Sprintf("element %s VR %s has undefined length", e.tag, e.vr)}
		}
		vr := e.vr
		if vr == "" && !c.w.implicit {
			// Read in implicit VR, written in explicit VR.
			if vr = vrOf(e); !longVR(vr) && e.length > 0xFFFF {
				vr = "UN"
			}
		}
		r.header(c.w, e.tag, vr, e.length)
		return in.copyTo(r.out, int64(e.length), func() string { return "value of " + e.tag.String() })
	case Dummy:
		if seq {
			return r.sequence(e, s, scope{dummy: true, w: c.w}, depth)
		}
		if err := skip(); err != nil {
			return err
		}
		return r.dummy(e, c.w)
	case Empty:
		if err := skip(); err != nil {
			return err
		}
		if seq {
			r.header(c.w, e.tag, seqVR(e, c.w), 0)
			return nil
		}
		switch vrOf(e) {
		case "CS", "LO", "LT", "SH", "ST", "UC", "UT":
			return r.writeValue(c.w, e.tag, vrOf(e), nil)
		}
		return r.dummy(e, c.w)
	case NewUID:
		if seq {
			return &FormatError{Offset: in.off, Msg: fmt.Sprintf("procedure asks for a new UID in sequence %s", e.tag)}
		}
		if val == nil {
			if e.undefinedLength() || e.length > maxValue {
				return &FormatError{Offset: in.off, Msg: fmt.Sprintf("UID element %s of %d bytes", e.tag, e.length)}
			}
			b, err := in.value(e.length, e.tag)
			if err != nil {
				return err
			}
			val = b
		}
		v := r.mapUIDs(string(val))
		if c.top {
			switch e.tag {
			case tagStudyUID:
				r.res.StudyInstanceUID = v
			case tagSeriesUID:
				r.res.SeriesInstanceUID = v
			case tagSOPInstance:
				r.res.SOPInstanceUID = v
				if v != r.metaInstance {
					return &FormatError{Offset: in.off, Msg: fmt.Sprintf("SOPInstanceUID not found reading ahead (meta group has %q, data set %q)", r.metaInstance, v)}
				}
			}
		}
		return r.writeValue(c.w, e.tag, vrOf(e), []byte(v))
	}
	return fmt.Errorf("rewrite %s: action %s not implemented", e.tag, rule.Action)
}

// dummyValue is the value D (and Z for VRs that cannot be empty) writes, the
// same as Grand Challenge's de-identifier (grand_challenge_dicom_de_identifier,
// VR_DUMMY_VALUES); binary zeros read the same in either byte order.
func dummyValue(vr string) ([]byte, bool) {
	switch vr {
	case "AE":
		return []byte("DUMMY_AE"), true
	case "AS":
		return []byte("030Y"), true
	case "CS", "SH":
		return []byte("DUMMY"), true
	case "DA":
		return []byte("20000101"), true
	case "DS":
		return []byte("0.0"), true
	case "DT":
		return []byte("20000101120000.000000"), true
	case "IS":
		return []byte("0"), true
	case "LO":
		return []byte("DUMMY_LONG_STRING"), true
	case "LT":
		return []byte("DUMMY LONG TEXT"), true
	case "PN":
		return []byte("DUMMY^PATIENT^^^"), true
	case "ST":
		return []byte("DUMMY SHORT TEXT"), true
	case "TM":
		return []byte("120000.000000"), true
	case "UC":
		return []byte("DUMMY UNLIMITED CHARACTERS"), true
	case "UI":
		return []byte("1.2.3.4.5.6.7.8.9.0.1.2.3.4.5.6.7.8.9.0"), true
	case "UR":
		return []byte("http://dummy.example.test"), true
	case "UT":
		return []byte("DUMMY UNLIMITED TEXT"), true
	case "OB":
		return []byte{0}, true
	case "UN", "SQ":
		// UN: an attribute whose VR nobody here knows, which only an
		// empty value fits whatever its VR; SQ: an empty sequence.
		return nil, true
	case "OW", "SS", "US":
		return make([]byte, 2), true
	case "AT", "FL", "OF", "OL", "SL", "UL":
		return make([]byte, 4), true
	case "FD", "OD", "OV", "SV", "UV":
		return make([]byte, 8), true
	}
	return nil, false
}

func (r *rewriter) dummy(e element, s syntax) error {
	vr := vrOf(e)
	v, ok := dummyValue(vr)
	if !ok {
		return &FormatError{Offset: r.in.off, Msg: fmt.Sprintf("no dummy value for %s of VR %s", e.tag, vr)}
	}
	return r.writeValue(s, e.tag, vr, v)
}

// sequence rewrites the items of sequence e under scope c, writing the
// sequence and its items with undefined length; a UN sequence read in an
// explicit VR little endian data set is written as an SQ.
func (r *rewriter) sequence(e element, s syntax, c scope, depth int) error {
	in := r.in
	if depth+1 >= maxDepth {
		return &FormatError{Offset: in.off, Msg: fmt.Sprintf("sequences nested deeper than %d", maxDepth)}
	}
	vr := seqVR(e, c.w)
	r.header(c.w, e.tag, vr, undefined)
	c.top = false
	if vr == "UN" {
		c.w = implicitLE
	}
	err := walkItems(in, e, s, depth, func(inner syntax, end int64) error {
		r.header(c.w, tagItem, "", undefined)
		if err := r.item(e.tag, inner, end, c, depth+1); err != nil {
			return err
		}
		r.header(c.w, tagItemDelim, "", 0)
		return nil
	})
	if err != nil {
		return err
	}
	r.header(c.w, tagSeqDelim, "", 0)
	return nil
}

// seqVR is the VR sequence e is written with in syntax w: SQ in explicit
// VR, except that a UN sequence of a big endian data set stays UN, its
// items implicit VR little endian as read (an SQ's would be big endian).
func seqVR(e element, w syntax) string {
	switch {
	case w.implicit:
		return ""
	case e.vr == "UN" && w.big:
		return "UN"
	}
	return "SQ"
}

// item rewrites the elements of one item ending at end (-1: at its
// delimiter, consumed here).
func (r *rewriter) item(seq Tag, s syntax, end int64, c scope, depth int) error {
	return walkElements(r.in, s, end, depth, seq, func(e element) (bool, error) {
		return true, r.apply(e, s, c, depth, nil)
	})
}

// fragments copies encapsulated pixel data: its items (the offset table and
// the compressed fragments) unchanged, as a stream.
func (r *rewriter) fragments(e element, s, w syntax) error {
	in := r.in
	vr := e.vr
	if vr == "" {
		vr = "OB" // PS3.5 A.4
	}
	r.header(w, e.tag, vr, undefined)
	for {
		it, err := in.readItemHeader(e, s)
		if err != nil {
			return err
		}
		if it.tag == tagSeqDelim {
			r.header(w, tagSeqDelim, "", 0)
			return nil
		}
		if it.undefinedLength() {
			return &FormatError{Offset: in.off, Msg: "pixel data fragment of undefined length"}
		}
		r.header(w, tagItem, "", it.length)
		if err := in.copyTo(r.out, int64(it.length), func() string { return "pixel data fragment" }); err != nil {
			return err
		}
	}
}
