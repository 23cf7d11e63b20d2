package pull

import "testing"

func TestPullResultString(t *testing.T) {
	r := Result{Items: 3, Files: 4, Downloaded: 2, Skipped: 1, Failed: 1, Values: 5, Bytes: 329}
	if got, want := r.String(), "3 items: 2 files downloaded (329 B), 1 already complete, 1 failed; 5 JSON values"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
