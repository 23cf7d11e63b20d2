//go:build linux

package sysservice

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// fakeSysLog records what the service handler sends to the system log.
type fakeSysLog struct{ lines []string }

func (f *fakeSysLog) rec(level string, v ...any) error {
	f.lines = append(f.lines, level+": "+fmt.Sprint(v...))
	return nil
}
func (f *fakeSysLog) Error(v ...any) error              { return f.rec("E", v...) }
func (f *fakeSysLog) Warning(v ...any) error            { return f.rec("W", v...) }
func (f *fakeSysLog) Info(v ...any) error               { return f.rec("I", v...) }
func (f *fakeSysLog) Errorf(s string, a ...any) error   { return f.rec("E", fmt.Sprintf(s, a...)) }
func (f *fakeSysLog) Warningf(s string, a ...any) error { return f.rec("W", fmt.Sprintf(s, a...)) }
func (f *fakeSysLog) Infof(s string, a ...any) error    { return f.rec("I", fmt.Sprintf(s, a...)) }

func TestServiceHandler(t *testing.T) {
	sl := &fakeSysLog{}
	log := slog.New(NewHandler(sl, slog.LevelInfo)).With("watch", "/data/in")
	log.Debug("hidden")
	log.Info("image done", "item", "0c5b")
	log.WithGroup("upload").Warn("slow", "part", 3)
	log.Error("failed", "err", errors.New("boom"))
	want := []string{
		`I: image done watch="/data/in" item="0c5b"`,
		`W: slow watch="/data/in" upload.part="3"`,
		`E: failed watch="/data/in" err="boom"`,
	}
	if got := strings.Join(sl.lines, "\n"); got != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
}

func TestServiceConfig(t *testing.T) {
	sc, err := Config("relative/config.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(sc.Arguments) != 3 || sc.Arguments[0] != "run" || sc.Arguments[1] != "--config" || !strings.HasPrefix(sc.Arguments[2], "/") {
		t.Errorf("arguments %q, want run --config <absolute path>", sc.Arguments)
	}
	deps := strings.Join(sc.Dependencies, "\n")
	for _, want := range []string{"After=network-online.target remote-fs.target", "Wants=network-online.target"} {
		if !strings.Contains(deps, want) {
			t.Errorf("dependencies lack %q", want)
		}
	}
	if sc.UserName != "gcingest" {
		t.Errorf("user %q, want gcingest", sc.UserName)
	}
}
