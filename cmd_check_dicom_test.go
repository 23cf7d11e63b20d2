package main

import (
	"os"
	"strings"
	"testing"
)

// TestCheckDICOMImageSet: check knows the DICOM Image Set kind and says
// which SOP classes the de-identification procedure accepts.
func TestCheckDICOMImageSet(t *testing.T) {
	for _, tt := range []struct {
		name, extra string
		wantCode    int
		want        string
	}{
		{"auto", "", exitOK, `DICOM Image Set: DICOM series only, each de-identified here with Grand Challenge's procedure 0.`},
		{"folder mode", "group = \"folder\"\n", -1, "not supported in folder mode"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, "good-token", tt.extra)
			f.srv.AddInterface("dicom-set", "DICOM Image Set")
			b, err := os.ReadFile(f.cfg)
			if err != nil {
				t.Fatal(err)
			}
			f.writeConfig(t, strings.Replace(string(b), `interface = "ct-image"`, `interface = "dicom-set"`, 1))
			r := runCLI(t, map[string]string{"GRAND_CHALLENGE_TOKEN": "good-token"}, "check", "--config", f.cfg)
			if tt.wantCode == exitOK && r.code != exitOK || tt.wantCode != exitOK && r.code == exitOK {
				t.Errorf("exit code %d; want %d (-1: any failure)\n%s", r.code, tt.wantCode, r.stdout)
			}
			if !strings.Contains(r.stdout, tt.want) {
				t.Errorf("check output lacks %q:\n%s", tt.want, r.stdout)
			}
			if tt.wantCode == exitOK && !strings.Contains(r.stdout, "1.2.840.10008.5.1.4.1.1.2 (CT Image Storage)") {
				t.Errorf("check output does not name the accepted SOP class:\n%s", r.stdout)
			}
		})
	}
}
