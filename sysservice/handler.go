package sysservice

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"

	"github.com/kardianos/service"
)

// serviceHandler is a slog.Handler writing to kardianos/service's logger:
// the system log of the platform. Attributes are rendered as key=value
// after the message, like slog's text handler.
type serviceHandler struct {
	l     service.Logger
	level slog.Level
	attrs []byte // pre-rendered WithAttrs
	group string
}

// NewHandler returns a handler writing records of level and above to l,
// the system log a service.Service gives (Logger).
func NewHandler(l service.Logger, level slog.Level) slog.Handler {
	return &serviceHandler{l: l, level: level}
}

func (h *serviceHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *serviceHandler) Handle(_ context.Context, r slog.Record) error {
	var buf bytes.Buffer
	buf.WriteString(r.Message)
	buf.Write(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		appendAttr(&buf, h.group, a)
		return true
	})
	msg := buf.String()
	switch {
	case r.Level >= slog.LevelError:
		return h.l.Error(msg)
	case r.Level >= slog.LevelWarn:
		return h.l.Warning(msg)
	}
	return h.l.Info(msg)
}

func (h *serviceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	var buf bytes.Buffer
	buf.Write(h.attrs)
	for _, a := range as {
		appendAttr(&buf, h.group, a)
	}
	n.attrs = buf.Bytes()
	return &n
}

func (h *serviceHandler) WithGroup(name string) slog.Handler {
	n := *h
	if n.group != "" {
		n.group += "."
	}
	n.group += name
	return &n
}

func appendAttr(buf *bytes.Buffer, group string, a slog.Attr) {
	v := a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	key := a.Key
	if group != "" {
		key = group + "." + key
	}
	if v.Kind() == slog.KindGroup {
		for _, g := range v.Group() {
			appendAttr(buf, key, g)
		}
		return
	}
	fmt.Fprintf(buf, " %s=%q", key, v.String())
}
