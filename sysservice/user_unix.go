//go:build !windows

package sysservice

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/gcingest/gcingest/config"
)

// createUserHow is what to run where gcingest cannot create the user.
const createUserHow = "useradd --system --user-group --home-dir /var/lib/gcingest --no-create-home --shell /usr/sbin/nologin gcingest" +
	" (Alpine/BusyBox: addgroup -S gcingest && adduser -S -D -H -h /var/lib/gcingest -s /sbin/nologin -G gcingest gcingest)"

// ensureServiceUser looks the service user up and, as root with useradd at
// hand, creates it as the packages do. Otherwise it says how.
func ensureServiceUser(w io.Writer, name string) (*user.User, error) {
	u, err := user.Lookup(name)
	if err == nil {
		return u, nil
	}
	var unknown user.UnknownUserError
	if !errors.As(err, &unknown) {
		return nil, fmt.Errorf("look up user %s: %w", name, err)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("user %s does not exist and only root can create it; run this as root, or create it first: %s", name, createUserHow)
	}
	useradd, err := exec.LookPath("useradd")
	if err != nil {
		return nil, fmt.Errorf("user %s does not exist and there is no useradd here; create it, then install again: %s", name, createUserHow)
	}
	out, err := exec.Command(useradd, "--system", "--user-group", "--home-dir", "/var/lib/gcingest", "--no-create-home",
		"--shell", "/usr/sbin/nologin", "--comment", "gcingest upload agent", name).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("create user %s with useradd: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	fmt.Fprintf(w, "created system user %s (the agent never runs as root)\n", name)
	return user.Lookup(name)
}

// prepareServiceFiles makes sure the agent, running as u, can read its
// config and token and write its state folder: it creates a missing state
// folder owned by u, and refuses (saying which chown fixes it) where an
// existing file would lock the agent out. It changes no existing file.
func prepareServiceFiles(w io.Writer, cfg *config.Config, u *user.User) error {
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	var problems []string

	for _, p := range []string{cfg.Path, cfg.GrandChallenge.TokenFile} {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) && p != cfg.Path {
			continue // the token may come from elsewhere; check says
		}
		if err != nil {
			return err
		}
		if !canAccess(fi, uid, gid, 4) {
			problems = append(problems, fmt.Sprintf("%s cannot be read by user %s: chown %s %s (keep mode 600: it may hold the token)", p, u.Username, u.Username, p))
		}
	}

	dir := filepath.Dir(cfg.State.Path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("create the state folder %s: %w", dir, err)
		}
		if err := os.Chown(dir, uid, gid); err != nil {
			return fmt.Errorf("give the state folder %s to user %s: %w", dir, u.Username, err)
		}
		fmt.Fprintf(w, "created the state folder %s, owned by %s\n", dir, u.Username)
	case err != nil:
		return err
	case !canAccess(fi, uid, gid, 2|1):
		problems = append(problems, fmt.Sprintf("the state folder %s cannot be written by user %s: chown %s: %s", dir, u.Username, u.Username, dir))
	}
	if fi, err := os.Stat(cfg.State.Path); err == nil && !canAccess(fi, uid, gid, 4|2) {
		problems = append(problems, fmt.Sprintf("the state file %s (written by another user, root?) cannot be written by user %s: chown %s: %s",
			cfg.State.Path, u.Username, u.Username, cfg.State.Path))
	}
	if len(problems) > 0 {
		return fmt.Errorf("the service runs as user %s, who could not use these files:\n  %s", u.Username, strings.Join(problems, "\n  "))
	}
	return nil
}

// canAccess reports whether uid (primary group gid) has the access bits
// want (4 read, 2 write, 1 search) on fi by its mode; root has all.
// Supplementary groups and ACLs are not considered: a "no" may be wrong in
// their favour, never a "yes".
func canAccess(fi fs.FileInfo, uid, gid int, want fs.FileMode) bool {
	if uid == 0 {
		return true
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	m := fi.Mode().Perm()
	switch {
	case int(st.Uid) == uid:
		return (m>>6)&want == want
	case int(st.Gid) == gid:
		return (m>>3)&want == want
	}
	return m&want == want
}
