package group

import (
	"bytes"
	"errors"
	"testing"
)

func TestReadDICOMHeader(t *testing.T) {
	full := makeDICOM("1.2.3", "1.2.3.4", testCTClass, "1.2.3.4.1", 512)
	tests := []struct {
		name           string
		data           []byte
		wantIncomplete bool
		wantBroken     bool
		wantSeries     string
		wantUIDsKnown  bool
	}{
		{name: "explicit VR little endian", data: full, wantSeries: "1.2.3.4", wantUIDsKnown: true},
		{name: "implicit VR little endian", data: dicomSpec{study: "1.2.3", series: "1.2.3.5", sopClass: testMRClass, instance: "1.2.3.5.1", pixels: 64, implicit: true}.bytes(), wantSeries: "1.2.3.5", wantUIDsKnown: true},
		{name: "encapsulated pixel data", data: dicomSpec{study: "1.2.3", series: "1.2.3.6", sopClass: testCTClass, instance: "1.2.3.6.1", pixels: 100, encapsulated: true}.bytes(), wantSeries: "1.2.3.6", wantUIDsKnown: true},
		{name: "no series UID", data: dicomSpec{study: "1.2.3", sopClass: testCTClass, instance: "1.2.3.7.1", pixels: 8, noSeries: true}.bytes(), wantUIDsKnown: true},
		{name: "cut in the pixel data", data: full[:len(full)-100], wantIncomplete: true, wantSeries: "1.2.3.4", wantUIDsKnown: true},
		{name: "cut one byte short", data: full[:len(full)-1], wantIncomplete: true, wantSeries: "1.2.3.4", wantUIDsKnown: true},
		{name: "cut in the meta group", data: full[:140], wantIncomplete: true},
		{name: "cut inside the sequence", data: full[:bytes.Index(full, []byte{0xFE, 0xFF, 0xDD, 0xE0})], wantIncomplete: true},
		{name: "encapsulated cut in a fragment", data: func() []byte {
			b := dicomSpec{study: "1", series: "2", sopClass: testCTClass, instance: "3.1", pixels: 100, encapsulated: true}.bytes()
			return b[:len(b)-20]
		}(), wantIncomplete: true, wantSeries: "2", wantUIDsKnown: true},
		{name: "invalid VR", data: func() []byte {
			b := bytes.Clone(full)
			i := bytes.Index(b, []byte("PN"))
			b[i], b[i+1] = 0x01, 0x02
			return b
		}(), wantBroken: true},
		{name: "no magic", data: append(make([]byte, 128), "NOPE"...), wantBroken: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := readDICOMHeader(bytes.NewReader(tt.data), int64(len(tt.data)))
			gotIncomplete := errors.Is(err, errDICOMIncomplete)
			gotBroken := err != nil && !gotIncomplete
			if gotIncomplete != tt.wantIncomplete || gotBroken != tt.wantBroken {
				t.Fatalf("readDICOMHeader error = %v; want incomplete %v, broken %v", err, tt.wantIncomplete, tt.wantBroken)
			}
			if h.Series != tt.wantSeries || h.UIDsKnown != tt.wantUIDsKnown {
				t.Errorf("got series %q, UIDs known %v; want %q, %v", h.Series, h.UIDsKnown, tt.wantSeries, tt.wantUIDsKnown)
			}
			if err == nil && (h.Study != "1.2.3" && h.Study != "1") {
				t.Errorf("got study %q", h.Study)
			}
		})
	}
}

// TestReadDICOMHeaderEveryPrefix: a file copied in chunks of any size is
// never taken as complete while its pixel data is still arriving.
func TestReadDICOMHeaderEveryPrefix(t *testing.T) {
	full := makeDICOM("1.2.3", "1.2.3.4", testCTClass, "1.2.3.4.1", 300)
	pixelsAt := len(full) - 300
	for n := 0; n < len(full); n++ {
		_, err := readDICOMHeader(bytes.NewReader(full[:n]), int64(n))
		if n >= pixelsAt-12 && err == nil {
			t.Fatalf("prefix of %d of %d bytes parsed as complete", n, len(full))
		}
	}
}

func FuzzReadDICOMHeader(f *testing.F) {
	f.Add(makeDICOM("1.2.3", "1.2.3.4", testCTClass, "1.2.3.4.1", 16))
	f.Add(dicomSpec{study: "1", series: "2", sopClass: testMRClass, instance: "2.1", pixels: 8, implicit: true}.bytes())
	f.Add(dicomSpec{study: "1", series: "2", sopClass: testMRClass, instance: "2.1", pixels: 8, encapsulated: true}.bytes())
	f.Add(append(make([]byte, 128), "DICM"...))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := readDICOMHeader(bytes.NewReader(data), int64(len(data)))
		if err == nil && len(data) < dicomPrefixLen {
			t.Fatalf("%d bytes parsed as a complete DICOM file", len(data))
		}
		if len(h.Study) > maxValueRead || len(h.Series) > maxValueRead {
			t.Fatalf("value longer than %d bytes read", maxValueRead)
		}
	})
}
