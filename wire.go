package main

import (
	"io"
	"log/slog"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/redact"
)

// token resolves the API token; no token is a config error.
func (c *cli) token(cfg *config.Config) (string, error) {
	tok, _, err := cfg.Token(c.getenv)
	if err != nil {
		return "", &configError{err}
	}
	return tok, nil
}

// newLogger builds the logger from [log]: text for a terminal, JSON when
// configured. Whatever handler, the token is scrubbed from every message
// and attribute as a last line of defence: no code should log it, and a
// server echoing a header back must not put it in the journal either.
func newLogger(cfg *config.Config, w io.Writer, token string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: logLevel(cfg.Log.Level)}
	var h slog.Handler
	if cfg.Log.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(redact.Handler(h, token))
}

func logLevel(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}
