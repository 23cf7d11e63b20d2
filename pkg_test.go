package main

import (
	"bytes"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/gcingest/gcingest/config"
)

// packagedConfig is the config the packages install: config.example.toml
// with every [[watch]] after the first commented out, so that a user who
// edits only the first gets no failures from check for a folder they never
// meant to watch.
func packagedConfig(example []byte) []byte {
	var out bytes.Buffer
	watches := 0
	for _, line := range strings.SplitAfter(string(example), "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "[[watch]]") {
			watches++
			if watches == 2 {
				out.WriteString("# Another drop folder, commented out: remove the \"# \" before its lines to use it.\n")
			}
		}
		if watches >= 2 && t != "" && !strings.HasPrefix(t, "#") {
			line = "# " + line
		}
		out.WriteString(line)
	}
	return out.Bytes()
}

// TestPkgConfig checks packaging/config.toml, the config the packages
// install (go test -update rewrites it from config.example.toml).
func TestPkgConfig(t *testing.T) {
	example, err := os.ReadFile("config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	const packaged = "packaging/config.toml"
	want := packagedConfig(example)
	if *update {
		if err := os.WriteFile(packaged, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(packaged)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not config.example.toml with the second watch commented out (go test -run TestPkgConfig -update rewrites it)", packaged)
	}
	cfg, err := config.Load(packaged)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Watch) != 1 {
		t.Errorf("the packaged config has %d active watches, want 1", len(cfg.Watch))
	}

	// What a user does after installing: edit the first watch (here its
	// folder; the fixture's fake server has its archive and interface),
	// then check. The url and state path are the test's plumbing.
	f := newFixture(t, "t", "")
	edit := func(src []byte) string {
		s := strings.Replace(string(src), `url = "https://grand-challenge.org"`, `url = "`+f.srv.URL+`"`, 1)
		s = strings.Replace(s, `path = "/var/lib/gcingest/state.db"`, `path = "`+f.state+`"`, 1)
		return strings.Replace(s, `path = "/data/scanner1/outbox"`, `path = "`+f.drop+`"`, 1)
	}
	env := map[string]string{"GRAND_CHALLENGE_TOKEN": "t"}
	f.writeConfig(t, edit(got))
	r := runCLI(t, env, "check", "--config", f.cfg)
	if r.code != exitOK || strings.Contains(r.stdout, "FAIL") {
		t.Errorf("check of the packaged config with only the first watch edited: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The example itself, edited the same way, still fails on its second
	// watch's folder: what users of the old package met.
	f.writeConfig(t, edit(example))
	if r := runCLI(t, env, "check", "--config", f.cfg); r.code == exitOK {
		t.Errorf("check passed config.example.toml with only the first watch edited; this test no longer tells the two apart")
	}
}

// TestPkgLinux builds the .deb and the .rpm from packaging/nfpm.yaml and
// checks what they hold. In CI as root (CI=true) it also installs each,
// checks files, user and unit, upgrades it (config, token and state must
// survive) and removes it (the token must not).
func TestPkgLinux(t *testing.T) {
	if testing.Short() {
		t.Skip("builds packages")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the Linux packages are built on Linux")
	}
	if os.Getenv("CI") != "true" && os.Getenv("GCINGEST_PKG") == "" {
		// nfpm is compiled on first use: minutes on a fresh machine, which
		// would break the README's promise for its test command.
		t.Skip("builds the .deb and .rpm with nfpm: runs with CI=true (as .ci/run sets) or GCINGEST_PKG=1")
	}
	out := t.TempDir()
	build := func(version string) (deb, rpm string) {
		t.Helper()
		cmd := exec.Command("sh", "packaging/build-pkg.sh", version, runtime.GOARCH)
		cmd.Env = append(os.Environ(), "OUT_DIR="+out)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("build-pkg.sh: %v\n%s%s", err, b, stderr.Bytes())
		}
		for _, p := range strings.Fields(string(b)) {
			switch filepath.Ext(p) {
			case ".deb":
				deb = p
			case ".rpm":
				rpm = p
			}
		}
		if deb == "" || rpm == "" {
			t.Fatalf("build-pkg.sh made %q, want a .deb and an .rpm", b)
		}
		return deb, rpm
	}
	deb, rpm := build("1.2.3")
	deb2, rpm2 := build("1.2.4")
	root := os.Getenv("CI") == "true" && os.Geteuid() == 0
	_, userErr := user.Lookup("gcingest")
	userBefore := userErr == nil
	removeUser := func(t *testing.T) {
		t.Helper()
		// Only a user this test created; never one the machine had.
		if !userBefore {
			exec.Command("userdel", "gcingest").Run()
		}
	}

	t.Run("deb", func(t *testing.T) {
		if _, err := exec.LookPath("dpkg-deb"); err != nil {
			t.Skip("dpkg-deb not installed (apt-get install dpkg); .ci/run installs it")
		}
		contents := runCmd(t, "dpkg-deb", "-c", deb)
		for _, want := range []string{"./usr/bin/gcingest", "./etc/gcingest/config.toml", "./usr/lib/systemd/system/gcingest.service",
			"./usr/share/doc/gcingest/config.example.toml", "./usr/share/doc/gcingest/copyright", "./usr/share/doc/gcingest/LICENSE",
			"./usr/share/doc/gcingest/NOTICE.de-identification-procedure", "./etc/logrotate.d/gcingest"} {
			if !strings.Contains(contents, want) {
				t.Errorf("package lacks %s:\n%s", want, contents)
			}
		}
		if got := strings.Fields(runCmd(t, "dpkg-deb", "-I", deb, "conffiles")); !slices.Equal(got, []string{"/etc/gcingest/config.toml", "/etc/logrotate.d/gcingest"}) {
			t.Errorf("conffiles = %q, want the config and the logrotate rules", got)
		}
		if got := runCmd(t, "dpkg-deb", "-f", deb, "License"); got != "" && !strings.Contains(got, "Apache-2.0") {
			t.Errorf("License = %q, want Apache-2.0", got)
		}
		if got := runCmd(t, "dpkg-deb", "-f", deb, "Depends"); !strings.Contains(got, "passwd") {
			t.Errorf("Depends = %q, want passwd (useradd)", got)
		}
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			if runCmd(t, "dpkg-deb", "-I", deb, s) == "" {
				t.Errorf("no %s script", s)
			}
		}
	})

	t.Run("deb install, upgrade, remove, purge", func(t *testing.T) {
		if !root {
			t.Skip("installs a system package: runs only as root with CI=true (as .ci/run does)")
		}
		if _, err := exec.LookPath("dpkg"); err != nil {
			t.Skip("no dpkg")
		}
		t.Cleanup(func() {
			exec.Command("dpkg", "--purge", "gcingest").Run()
			os.RemoveAll("/var/lib/gcingest")
			removeUser(t)
		})
		installed := func(p string) string {
			t.Helper()
			return runCmd(t, "dpkg", "--force-confold", "-i", p)
		}
		lifecycle(t, lifecycleSpec{
			install: func() string { return installed(deb) },
			upgrade: func() string { return installed(deb2) },
			remove: func(t *testing.T) {
				runCmd(t, "dpkg", "-r", "gcingest")
				// Debian's rule: remove keeps the config and the token.
				for _, p := range []string{"/etc/gcingest/config.toml", "/etc/gcingest/token"} {
					if _, err := os.Stat(p); err != nil {
						t.Errorf("dpkg -r removed %s: %v", p, err)
					}
				}
				runCmd(t, "dpkg", "--purge", "gcingest")
				if _, err := os.Stat("/etc/gcingest"); err == nil {
					t.Errorf("/etc/gcingest (config, token) still there after dpkg --purge")
				}
			},
		})
	})

	t.Run("rpm", func(t *testing.T) {
		if _, err := exec.LookPath("rpm"); err != nil {
			t.Skip("rpm not installed (apt-get install rpm); .ci/run installs it")
		}
		if got := runCmd(t, "rpm", "-qp", "--qf", "%{NAME} %{VERSION} %{RELEASE}", rpm); got != "gcingest 1.2.3 1" {
			t.Errorf("rpm says %q, want gcingest 1.2.3 1", got)
		}
		list := runCmd(t, "rpm", "-qp", "--list", rpm)
		for _, want := range []string{"/usr/bin/gcingest", "/etc/gcingest/config.toml", "/usr/lib/systemd/system/gcingest.service",
			"/usr/share/doc/gcingest/copyright", "/usr/share/doc/gcingest/LICENSE", "/etc/logrotate.d/gcingest"} {
			if !strings.Contains(list, want+"\n") {
				t.Errorf("package lacks %s:\n%s", want, list)
			}
		}
		if got := strings.Fields(runCmd(t, "rpm", "-qp", "--configfiles", rpm)); !slices.Equal(got, []string{"/etc/gcingest/config.toml", "/etc/logrotate.d/gcingest"}) {
			t.Errorf("config files = %q, want the config and the logrotate rules", got)
		}
		if got := runCmd(t, "rpm", "-qp", "--qf", "%{LICENSE}", rpm); got != "Apache-2.0" {
			t.Errorf("rpm licence = %q, want Apache-2.0", got)
		}
		if got := runCmd(t, "rpm", "-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]", rpm); !strings.Contains(got, "cn /etc/gcingest/config.toml") {
			t.Errorf("the config is not %%config(noreplace):\n%s", got)
		}
		if got := runCmd(t, "rpm", "-qp", "--requires", rpm); !strings.Contains(got, "shadow-utils") {
			t.Errorf("requires %q, want shadow-utils (useradd)", got)
		}
		scripts := runCmd(t, "rpm", "-qp", "--scripts", rpm)
		for _, want := range []string{"postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet", "useradd --system"} {
			if !strings.Contains(scripts, want) {
				t.Errorf("scripts lack %q:\n%s", want, scripts)
			}
		}
	})

	t.Run("rpm install, upgrade, erase", func(t *testing.T) {
		if !root {
			t.Skip("installs a system package: runs only as root with CI=true (as .ci/run does)")
		}
		if _, err := exec.LookPath("rpm"); err != nil {
			t.Skip("no rpm")
		}
		// On Debian, rpm keeps its own database, which knows none of the
		// system's packages: --nodeps skips the dependency check (passwd
		// provides useradd here); everything else, scripts included, runs
		// as on RHEL.
		removeUser(t) // prove the scripts create it
		t.Cleanup(func() {
			exec.Command("rpm", "-e", "gcingest").Run()
			os.RemoveAll("/etc/gcingest")
			os.RemoveAll("/var/lib/gcingest")
			removeUser(t)
		})
		lifecycle(t, lifecycleSpec{
			install: func() string { return runCmd(t, "rpm", "-i", "--nodeps", rpm) },
			upgrade: func() string { return runCmd(t, "rpm", "-U", "--nodeps", rpm2) },
			remove: func(t *testing.T) {
				runCmd(t, "rpm", "-e", "gcingest")
				if _, err := os.Stat("/etc/gcingest/token"); err == nil {
					t.Errorf("the token is still there after rpm -e")
				}
				// rpm's rule for an edited %config file.
				if _, err := os.Stat("/etc/gcingest/config.toml.rpmsave"); err != nil {
					t.Errorf("the edited config was not kept as config.toml.rpmsave: %v", err)
				}
			},
		})
	})
}

// lifecycleSpec is how one package format installs, upgrades (1.2.3 to
// 1.2.4) and removes.
type lifecycleSpec struct {
	install, upgrade func() string // the tool's output
	remove           func(t *testing.T)
}

// lifecycle runs what both formats must do alike.
func lifecycle(t *testing.T, s lifecycleSpec) {
	t.Helper()
	if got := s.install(); !strings.Contains(got, "gcingest installed. To start it:") {
		t.Errorf("first install printed no instructions:\n%s", got)
	}
	if got := runCmd(t, "/usr/bin/gcingest", "version"); got != "gcingest 1.2.3\n" {
		t.Errorf("installed binary says %q", got)
	}
	u, err := user.Lookup("gcingest")
	if err != nil {
		t.Fatalf("no gcingest user: %v", err)
	}
	assertOwner(t, "/var/lib/gcingest", u.Uid, 0o750)
	// root:gcingest 0640: the agent reads its config, cannot change it.
	assertOwner(t, "/etc/gcingest/config.toml", "0", 0o640)
	assertGroup(t, "/etc/gcingest/config.toml", u.Gid)
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

	// The packaged binary finds the packaged config without --config.
	if r := runCmd(t, "/usr/bin/gcingest", "status"); !strings.Contains(r, "no images yet") {
		t.Errorf("gcingest status on a fresh install: %q", r)
	}

	// Upgrade: an edited config, the token and the state stay.
	f, err := os.OpenFile("/etc/gcingest/config.toml", os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("# edited by the test\n")
	f.Close()
	if err := os.WriteFile("/etc/gcingest/token", []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	statePath := filepath.Join("/var/lib/gcingest", "state.db")
	if err := os.WriteFile(statePath, []byte("state"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := s.upgrade(); strings.Contains(got, "gcingest installed. To start it:") {
		t.Errorf("the upgrade printed the first-install instructions:\n%s", got)
	}
	if got := runCmd(t, "/usr/bin/gcingest", "version"); got != "gcingest 1.2.4\n" {
		t.Errorf("after upgrade the binary says %q", got)
	}
	if b, _ := os.ReadFile("/etc/gcingest/config.toml"); !strings.Contains(string(b), "# edited by the test") {
		t.Errorf("upgrade replaced the edited config")
	}
	assertOwner(t, "/etc/gcingest/token", "0", 0o640)
	assertGroup(t, "/etc/gcingest/token", u.Gid)
	if b, _ := os.ReadFile(statePath); string(b) != "state" {
		t.Errorf("upgrade lost the state file")
	}

	s.remove(t)
	if _, err := os.Stat("/usr/bin/gcingest"); err == nil {
		t.Errorf("binary still there after removal")
	}
	if _, err := os.Stat(statePath); err != nil {
		t.Errorf("removal removed the state: %v", err)
	}
}

func assertGroup(t *testing.T, p, gid string) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := fileGID(fi); got != gid {
		t.Errorf("%s group %s, want %s", p, got, gid)
	}
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
