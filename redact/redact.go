// Package redact keeps a secret (the API token) out of the log: a
// slog.Handler wrapper that scrubs it from every message and attribute, a
// last line of defence whatever handler writes the log.
package redact

import (
	"context"
	"log/slog"
	"strings"
)

// handler replaces the secret in messages and string attributes.
type handler struct {
	h      slog.Handler
	secret string
}

// Handler returns a handler that passes records to h with every
// occurrence of secret, in the message and in string, error and group
// attributes, replaced by "[token]". A secret shorter than 4 bytes is not
// scrubbed (it would mangle ordinary words): h is returned.
func Handler(h slog.Handler, secret string) slog.Handler {
	if len(secret) < 4 { // nothing sensible to scrub; avoids mangling every "a"
		return h
	}
	return &handler{h: h, secret: secret}
}

func (r *handler) Enabled(ctx context.Context, l slog.Level) bool { return r.h.Enabled(ctx, l) }

func (r *handler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, r.scrub(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(r.attr(a))
		return true
	})
	return r.h.Handle(ctx, out)
}

func (r *handler) WithAttrs(as []slog.Attr) slog.Handler {
	scrubbed := make([]slog.Attr, len(as))
	for i, a := range as {
		scrubbed[i] = r.attr(a)
	}
	return &handler{h: r.h.WithAttrs(scrubbed), secret: r.secret}
}

func (r *handler) WithGroup(name string) slog.Handler {
	return &handler{h: r.h.WithGroup(name), secret: r.secret}
}

func (r *handler) scrub(s string) string { return strings.ReplaceAll(s, r.secret, "[token]") }

func (r *handler) attr(a slog.Attr) slog.Attr {
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
