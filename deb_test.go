package main

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestDebianPackage builds the .deb and checks what it holds. In CI as
// root (CI=true) it also installs it with dpkg -i, checks the files, user
// and unit, upgrades it (config and state must survive) and removes it.
func TestDebianPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a package")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the Debian package is built on Linux")
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not installed (apt-get install dpkg); .ci/run installs it")
	}
	out := t.TempDir()
	build := func(version string) string {
		t.Helper()
		cmd := exec.Command("sh", "packaging/build-deb.sh", version, runtime.GOARCH)
		cmd.Env = append(os.Environ(), "OUT_DIR="+out)
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("build-deb.sh: %v\n%s", err, b)
		}
		return strings.TrimSpace(string(b))
	}
	deb := build("1.2.3")

	contents := runCmd(t, "dpkg-deb", "-c", deb)
	for _, want := range []string{"./usr/bin/gcingest", "./etc/gcingest/config.toml", "./usr/lib/systemd/system/gcingest.service"} {
		if !strings.Contains(contents, want) {
			t.Errorf("package lacks %s:\n%s", want, contents)
		}
	}
	if got := strings.TrimSpace(runCmd(t, "dpkg-deb", "-I", deb, "conffiles")); got != "/etc/gcingest/config.toml" {
		t.Errorf("conffiles = %q, want the config", got)
	}

	t.Run("install", func(t *testing.T) {
		if os.Getenv("CI") != "true" || os.Geteuid() != 0 {
			t.Skip("installs a system package: runs only as root with CI=true (as .ci/run does)")
		}
		if _, err := exec.LookPath("dpkg"); err != nil {
			t.Skip("no dpkg")
		}
		t.Cleanup(func() { exec.Command("dpkg", "--purge", "gcingest").Run() })
		runCmd(t, "dpkg", "-i", deb)

		if got := runCmd(t, "/usr/bin/gcingest", "version"); got != "gcingest 1.2.3\n" {
			t.Errorf("installed binary says %q", got)
		}
		u, err := user.Lookup("gcingest")
		if err != nil {
			t.Fatalf("no gcingest user: %v", err)
		}
		assertOwner(t, "/var/lib/gcingest", u.Uid, 0o750)
		assertOwner(t, "/etc/gcingest/config.toml", u.Uid, 0o600)
		unit, err := os.ReadFile("/usr/lib/systemd/system/gcingest.service")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"User=gcingest", "After=network-online.target remote-fs.target", "Wants=network-online.target",
			"ExecStart=/usr/bin/gcingest run --config /etc/gcingest/config.toml"} {
			if !strings.Contains(string(unit), want) {
				t.Errorf("unit lacks %q", want)
			}
		}

		// Upgrade: an edited config and the state stay.
		f, err := os.OpenFile("/etc/gcingest/config.toml", os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("# edited by the test\n")
		f.Close()
		statePath := filepath.Join("/var/lib/gcingest", "state.db")
		if err := os.WriteFile(statePath, []byte("state"), 0o600); err != nil {
			t.Fatal(err)
		}
		deb2 := build("1.2.4")
		runCmd(t, "dpkg", "--force-confold", "-i", deb2)
		if got := runCmd(t, "/usr/bin/gcingest", "version"); got != "gcingest 1.2.4\n" {
			t.Errorf("after upgrade the binary says %q", got)
		}
		if b, _ := os.ReadFile("/etc/gcingest/config.toml"); !strings.Contains(string(b), "# edited by the test") {
			t.Errorf("upgrade replaced the edited config")
		}
		if b, _ := os.ReadFile(statePath); string(b) != "state" {
			t.Errorf("upgrade lost the state file")
		}

		runCmd(t, "dpkg", "-r", "gcingest")
		if _, err := os.Stat("/usr/bin/gcingest"); err == nil {
			t.Errorf("binary still there after dpkg -r")
		}
		if _, err := os.Stat(statePath); err != nil {
			t.Errorf("dpkg -r removed the state: %v", err)
		}
		runCmd(t, "dpkg", "--purge", "gcingest")
		if _, err := os.Stat("/etc/gcingest/config.toml"); err == nil {
			t.Errorf("config still there after purge")
		}
		os.Remove(statePath)
	})
}

func runCmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	b, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, b)
	}
	return string(b)
}

func assertOwner(t *testing.T, p, uid string, mode os.FileMode) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != mode {
		t.Errorf("%s mode %04o, want %04o", p, got, mode)
	}
	if got := fileUID(fi); got != uid {
		t.Errorf("%s owned by uid %s, want %s", p, got, uid)
	}
}
