package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/state"
)

// The status JSON says what a waiting image waits for and until when.
func TestStatusImageShowsWhatItWaitsFor(t *testing.T) {
	until := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	si := statusImage(state.Image{ID: 7, State: state.Importing, WaitingFor: "the server to attach ct-image to archive item x", Until: until})
	b, err := json.Marshal(si)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"waiting_for":"the server to attach ct-image to archive item x"`, `"until":"2026-01-02T03:04:05Z"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("status JSON %s lacks %s", b, want)
		}
	}
}
