package sysservice

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestServiceScripts(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("init scripts are for Linux")
	}
	exe, cfg := "/opt/my apps/gcingest", "/etc/gc'ingest/config.toml"
	for name, script := range map[string]string{"sysv": SysVScript(exe, cfg, "gcingest"), "openrc": OpenRCScript(exe, cfg, "gcingest")} {
		t.Run(name, func(t *testing.T) {
			if strings.Contains(script, "{{") {
				t.Errorf("the script holds {{, which kardianos/service would render as a template")
			}
			p := filepath.Join(t.TempDir(), name)
			if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("sh", "-n", p).CombinedOutput(); err != nil {
				t.Errorf("sh -n: %v\n%s", err, out)
			}
			// The quoted paths come back whole from the shell.
			out, err := exec.Command("sh", "-c", strings.Join([]string{
				"eval \"$(grep -E '^(exe|config|command|user)=' " + shQuote(p) + ")\"",
				`printf '%s|%s|%s' "${exe:-$command}" "$config" "$user"`}, "\n")).CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			want := exe + "|" + cfg + "|gcingest"
			if name == "openrc" {
				want = exe + "||" // command_user and command_args are read by openrc-run
			}
			if string(out) != want {
				t.Errorf("the shell reads %q, want %q", out, want)
			}
		})
	}
	t.Run("sysv runs the agent as the user, never as root", func(t *testing.T) {
		s := SysVScript(exe, cfg, "gcingest")
		for _, want := range []string{`setpriv --reuid="$user" --regid="$user" --init-groups`, `su -s /bin/sh -c`, "exit 3"} {
			if !strings.Contains(s, want) {
				t.Errorf("script lacks %q", want)
			}
		}
	})
	t.Run("openrc runs the agent as the user", func(t *testing.T) {
		s := OpenRCScript(exe, cfg, "gcingest")
		if !strings.Contains(s, `command_user="gcingest:gcingest"`) || strings.Contains(s, "After=") {
			t.Errorf("script:\n%s", s)
		}
	})
	t.Run("service config carries both", func(t *testing.T) {
		sc, err := Config("/etc/gcingest/config.toml")
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"SysvScript", "OpenRCScript"} {
			if s, _ := sc.Option[k].(string); !strings.Contains(s, "gcingest") {
				t.Errorf("option %s = %q", k, s)
			}
		}
	})
}
