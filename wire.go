package main

import (
	"context"
	"io"
	"log/slog"
	"strings"

	"github.com/gcingest/gcingest/config"
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
	return slog.New(redact(h, token))
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

// redactHandler replaces the secret in messages and string attributes.
type redactHandler struct {
	h      slog.Handler
	secret string
}

func redact(h slog.Handler, secret string) slog.Handler {
	if len(secret) < 4 { // nothing sensible to scrub; avoids mangling every "a"
		return h
	}
	return &redactHandler{h: h, secret: secret}
}

func (r *redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return r.h.Enabled(ctx, l) }

func (r *redactHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, r.scrub(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(r.attr(a))
		return true
	})
	return r.h.Handle(ctx, out)
}

func (r *redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	scrubbed := make([]slog.Attr, len(as))
	for i, a := range as {
		scrubbed[i] = r.attr(a)
	}
	return &redactHandler{h: r.h.WithAttrs(scrubbed), secret: r.secret}
}

func (r *redactHandler) WithGroup(name string) slog.Handler {
	return &redactHandler{h: r.h.WithGroup(name), secret: r.secret}
}

func (r *redactHandler) scrub(s string) string { return strings.ReplaceAll(s, r.secret, "[token]") }

func (r *redactHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, r.scrub(v.String()))
	case slog.KindGroup:
		as := v.Group()
		out := make([]slog.Attr, len(as))
		for i, g := range as {
			out[i] = r.attr(g)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(out...)}
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, r.scrub(err.Error()))
		}
		return slog.String(a.Key, r.scrub(v.String()))
	}
	return slog.Attr{Key: a.Key, Value: v}
}
