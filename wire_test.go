//go:build linux

package main

import (
	"testing"

	"github.com/gcingest/gcingest/config"
)

func TestOfferKeepsNewestReload(t *testing.T) {
	ch := make(chan *config.Config, 1)
	a, b := &config.Config{Path: "a"}, &config.Config{Path: "b"}
	offer(ch, a)
	offer(ch, b) // must not block, must replace a
	if got := <-ch; got != b {
		t.Errorf("got %s, want the newest config b", got.Path)
	}
}
