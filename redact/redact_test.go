package redact

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestRedactHandler(t *testing.T) {
	const tok = "tok-3f9a1c2b7e4d"
	var buf bytes.Buffer
	log := slog.New(Handler(slog.NewTextHandler(&buf, nil), tok))
	log.With("header", "Bearer "+tok).Info("sent Authorization: Bearer "+tok,
		"err", errors.New("401 for token "+tok), slog.Group("req", "auth", tok), "n", 3)
	got := buf.String()
	if strings.Contains(got, tok) {
		t.Errorf("token in log: %s", got)
	}
	if !strings.Contains(got, "[token]") || !strings.Contains(got, "n=3") {
		t.Errorf("log lost its content: %s", got)
	}
}

func TestShortSecretIsNotScrubbed(t *testing.T) {
	var buf bytes.Buffer
	slog.New(Handler(slog.NewTextHandler(&buf, nil), "a")).Info("a cat")
	if !strings.Contains(buf.String(), "a cat") {
		t.Errorf("a one-letter secret mangled the log: %s", buf.String())
	}
}
