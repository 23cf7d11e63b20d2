package pull

import "testing"

func TestPullHumanBytes(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{329, "329 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1229, "1.2 KiB"},
		{3565158, "3.4 MiB"},
		{5 << 30, "5.0 GiB"},
	}
	for _, tt := range tests {
		if got := humanBytes(tt.n); got != tt.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestPullResultString(t *testing.T) {
	r := Result{Items: 3, Files: 4, Downloaded: 2, Skipped: 1, Failed: 1, Values: 5, Bytes: 329}
	if got, want := r.String(), "3 items: 2 files downloaded (329 B), 1 already complete, 1 failed; 5 JSON values"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
