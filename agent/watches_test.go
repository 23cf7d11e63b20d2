package agent

import (
	"os"
	"testing"
	"time"

	"github.com/gcingest/gcingest/config"
)

func TestWatchesFromConfig(t *testing.T) {
	f, err := os.Open("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := config.Parse(f, "../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	c.Watch[0].Path += "/sub/.."
	ws := Watches(c)
	if got, want := len(ws), len(c.Watch); got != want {
		t.Fatalf("got %d watches, want %d", got, want)
	}
	if got, want := ws[1].Values["*.pdf"], "report"; got != want {
		t.Errorf("watch[1] values[*.pdf] = %q, want %q", got, want)
	}
	if got, want := ws[0].Settle, 30*time.Second; got != want {
		t.Errorf("watch[0] settle = %v, want %v", got, want)
	}
	if got, want := ws[0].Path+"/sub/..", c.Watch[0].Path; got != want {
		t.Errorf("watch[0] path = %q, want it cleaned from %q", ws[0].Path, want)
	}
	ws[1].Values["*.pdf"] = "changed"
	if got, want := c.Watch[1].Values["*.pdf"], "report"; got != want {
		t.Errorf("config's values changed through the watch: %q, want %q", got, want)
	}
}
