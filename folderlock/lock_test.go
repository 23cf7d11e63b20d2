package folderlock

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestSecondAcquireIsRefusedWithTheHolderNamed(t *testing.T) {
	dir := t.TempDir()
	first, err := Acquire(dir, "host a, pid 1")
	if err != nil {
		t.Fatalf("first Acquire: %v", err)
	}
	_, err = Acquire(dir, "host b, pid 2")
	var held *HeldError
	if !errors.As(err, &held) {
		t.Fatalf("second Acquire = %v, want a HeldError", err)
	}
	if held.Dir != dir {
		t.Errorf("HeldError.Dir = %q, want %q", held.Dir, dir)
	}
	if runtime.GOOS != "windows" && !strings.Contains(held.Owner, "host a, pid 1") {
		t.Errorf("HeldError.Owner = %q, want the first holder's description", held.Owner)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not name the folder", err)
	}
	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	again, err := Acquire(dir, "host b, pid 2")
	if err != nil {
		t.Fatalf("Acquire after Close: %v", err)
	}
	again.Close()
}

func TestLockFileIsHiddenAndStays(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(dir, "x")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if !strings.HasPrefix(Name, ".") {
		t.Errorf("lock file name %q is not hidden: the grouper would see it", Name)
	}
	if _, err := os.Stat(filepath.Join(dir, Name)); err != nil {
		t.Errorf("lock file gone after Close: %v", err)
	}
}

func TestSymlinkInPlaceOfTheLockFileIsNotFollowed(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symlinks need privileges on Windows")
	}
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(target, []byte("do not touch"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, Name)); err != nil {
		t.Fatal(err)
	}
	if l, err := Acquire(dir, "x"); err == nil {
		l.Close()
		t.Fatal("Acquire followed a symlink planted as the lock file")
	}
	if b, _ := os.ReadFile(target); string(b) != "do not touch" {
		t.Errorf("symlink target rewritten to %q", b)
	}
}

func TestReadOnlyFolderIsUnsupportedNotHeld(t *testing.T) {
	if runtime.GOOS == "windows" || os.Geteuid() == 0 {
		t.Skip("needs a non-root Unix user: root writes into read-only folders")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o755) })
	_, err := Acquire(dir, "x")
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Acquire on a read-only folder = %v, want ErrUnsupported", err)
	}
}

// TestLockDiesWithItsProcess holds the lock in a child process, kills it
// with SIGKILL and takes the lock over: no stale lock after a crash.
func TestLockDiesWithItsProcess(t *testing.T) {
	if os.Getenv("FOLDERLOCK_CHILD") != "" {
		l, err := Acquire(os.Getenv("FOLDERLOCK_CHILD"), "child")
		if err != nil {
			os.Stdout.WriteString("error " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("locked\n")
		// Held until the parent kills us; it never writes to our stdin.
		var b [1]byte
		os.Stdin.Read(b[:])
		l.Close()
		os.Exit(0)
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockDiesWithItsProcess$")
	cmd.Env = append(os.Environ(), "FOLDERLOCK_CHILD="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "locked\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child said %q, want locked", line)
	}
	var held *HeldError
	if _, err := Acquire(dir, "parent"); !errors.As(err, &held) {
		t.Fatalf("Acquire while another process holds the lock = %v, want a HeldError", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	l, err := Acquire(dir, "parent")
	if err != nil {
		t.Fatalf("Acquire after the holder was killed: %v", err)
	}
	l.Close()
}

// Holder names the process that holds a folder's lock, and changes
// nothing: a folder without a lock file is held by nobody and gets none,
// and a free lock is left free.
func TestHolderReadsWithoutTaking(t *testing.T) {
	dir := t.TempDir()
	if err := Holder(dir); err != nil {
		t.Fatalf("Holder of a folder without a lock file = %v, want nil", err)
	}
	if _, err := os.Stat(filepath.Join(dir, Name)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Holder made the lock file (stat: %v)", err)
	}
	l, err := Acquire(dir, "host a, pid 1")
	if err != nil {
		t.Fatal(err)
	}
	err = Holder(dir)
	var held *HeldError
	if !errors.As(err, &held) {
		t.Fatalf("Holder of a held lock = %v, want a HeldError", err)
	}
	if runtime.GOOS != "windows" && !strings.Contains(held.Owner, "host a, pid 1") {
		t.Errorf("HeldError.Owner = %q, want the holder's description", held.Owner)
	}
	l.Close()
	if err := Holder(dir); err != nil {
		t.Fatalf("Holder of a released lock = %v, want nil", err)
	}
	again, err := Acquire(dir, "host b, pid 2")
	if err != nil {
		t.Fatalf("Acquire after Holder: %v", err)
	}
	again.Close()
}
