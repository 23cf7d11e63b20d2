package main

import (
	"errors"
	"io"
	"log/slog"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/redact"
)

// token resolves the API token; no token is a config error.
func (c *cli) token(cfg *config.Config) (string, error) {
	tok, src, err := cfg.Token(c.getenv)
	if err != nil {
		return "", &configError{err}
	}
	c.tokenSource = src
	return tok, nil
}

// withTokenSource names where the token came from on an error that says
// the server refused it: a stale GRAND_CHALLENGE_TOKEN beside a good token
// in the config wins, and the operator must know which one was used.
func (c *cli) withTokenSource(err error) error {
	if c.tokenSource == "" || !errors.Is(err, gcapi.ErrUnauthorized) {
		return err
	}
	return &tokenRefusedError{source: c.tokenSource, err: err}
}

// tokenRefusedError is a refused token, with where it came from.
type tokenRefusedError struct {
	source string
	err    error
}

func (e *tokenRefusedError) Error() string {
	return e.err.Error() + " (the token used came from " + e.source + ")"
}
func (e *tokenRefusedError) Unwrap() error { return e.err }

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
