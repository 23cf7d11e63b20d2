package dimse

import "testing"

func TestPathName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"CT_SCANNER-1", "CT_SCANNER-1"},
		{"1.2.840.113619.2.55", "1.2.840.113619.2.55"},
		{"", "_"},
		{"..", "_."},
		{".hidden", "_hidden"},
		{"../../etc", "_._.._etc"},
		{`A\B/C:D E`, "A_B_C_D_E"},
		{"CON", "_CON"},
		{"lpt1.x", "_lpt1.x"},
		{"CONSOLE", "CONSOLE"},
		{"ÄE", "__E"},
	} {
		if got := pathName(tc.in); got != tc.want {
			t.Errorf("pathName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
