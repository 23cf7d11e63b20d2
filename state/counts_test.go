package state

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// assertCounts checks that the counts kept with every move (Counts) are
// what the state index holds. A store the test closed already is skipped.
func assertCounts(t *testing.T, s *Store) {
	t.Helper()
	got, err := s.Counts()
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	var want map[State]int
	if err := s.db.View(func(tx *bolt.Tx) (err error) {
		want, err = countIndex(tx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, want) {
		t.Errorf("Counts = %v; the state index holds %v", got, want)
	}
}

// TestCountsFollowEveryMove creates, moves and deletes images and checks
// the counts after each step, then after a reopen and read-only.
func TestCountsFollowEveryMove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := openTest(t, path)
	check := func(step string, want map[State]int) {
		t.Helper()
		got, err := s.Counts()
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(got, want) {
			t.Errorf("after %s: Counts = %v; want %v", step, got, want)
		}
		assertCounts(t, s)
	}
	check("nothing", map[State]int{})
	var imgs []*Image
	for i := range 5 {
		imgs = append(imgs, newImage(fmt.Sprintf("k%d", i)))
	}
	if _, err := s.CreateEach(imgs, nil); err != nil {
		t.Fatal(err)
	}
	check("create", map[State]int{Pending: 5})
	walk(t, s, imgs[0].ID, Uploading, Uploaded, Attaching, Importing, Done, Finished)
	walk(t, s, imgs[1].ID, Failed)
	walk(t, s, imgs[2].ID, Retrying)
	check("moves", map[State]int{Pending: 2, Finished: 1, Failed: 1, Retrying: 1})
	// A refused move and a failing fn change nothing.
	if _, err := s.Update(imgs[3].ID, func(r *Image) error { r.State = Finished; return nil }); !errors.Is(err, ErrTransition) {
		t.Errorf("pending → finished: err = %v; want ErrTransition", err)
	}
	if _, err := s.Update(imgs[3].ID, func(r *Image) error { r.State = Failed; return errors.New("no") }); err == nil {
		t.Error("a failing fn: no error")
	}
	if _, err := s.Update(imgs[3].ID, func(r *Image) error { r.Attempts++; return nil }); err != nil {
		t.Fatal(err)
	}
	check("refused moves and a write that keeps the state", map[State]int{Pending: 2, Finished: 1, Failed: 1, Retrying: 1})
	if n, err := s.Delete(imgs[0].ID, imgs[1].ID, 999); err != nil || n != 2 {
		t.Fatalf("Delete = %d, %v; want 2", n, err)
	}
	check("delete", map[State]int{Pending: 2, Retrying: 1})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ro := range []bool{false, true} {
		s2, err := Open(path, Options{ReadOnly: ro})
		if err != nil {
			t.Fatal(err)
		}
		got, err := s2.Counts()
		s2.Close()
		if want := (map[State]int{Pending: 2, Retrying: 1}); err != nil || !maps.Equal(got, want) {
			t.Errorf("reopened (read-only %v): Counts = %v, %v; want %v", ro, got, err, want)
		}
	}
}

// TestMigrateV4 upgrades a schema-4 file, which kept no counts: the
// upgrade counts its state index, and moves keep the counts from then on.
func TestMigrateV4(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.db")
	s, err := open(p, Options{}, 4, migrations()[:3])
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range []State{Pending, Failed, Finished, Finished, Retrying} {
		img := newImage(fmt.Sprintf("k%d", i))
		img.State = st
		if err := s.Create(img); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketCounts) != nil {
			return errors.New("a schema-4 file has a counts bucket")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p, Options{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "start gcingest run once") {
		t.Errorf("read-only Open of a schema-4 file: err = %v; want it to ask for a run to upgrade it", err)
	}
	s = openTest(t, p)
	want := map[State]int{Pending: 1, Failed: 1, Finished: 2, Retrying: 1}
	if got, err := s.Counts(); err != nil || !maps.Equal(got, want) {
		t.Errorf("after the upgrade: Counts = %v, %v; want %v", got, err, want)
	}
	walk(t, s, 1, Uploading)
	want[Pending], want[Uploading] = 0, 1
	delete(want, Pending)
	if got, err := s.Counts(); err != nil || !maps.Equal(got, want) {
		t.Errorf("after a move: Counts = %v, %v; want %v", got, err, want)
	}
}

// TestReadOnlyDamageIsAnError reads damaged files read-only, as gcingest
// status does without walking every page at open: whatever damage a read
// meets is an error that says how to move the file aside, never a crash,
// and the file is left as it was.
func TestReadOnlyDamageIsAnError(t *testing.T) {
	dir := t.TempDir()
	write := func(t *testing.T, path string) {
		s, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 400 {
			if err := s.Create(newImage(fmt.Sprintf("img%03d", i))); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	cases := map[string]func(b []byte) []byte{
		"damaged data pages": func(b []byte) []byte {
			for i := 4 * 4096; i < len(b); i += 4096 {
				copy(b[i:], "garbage header!!")
			}
			return b
		},
		"truncated to half": func(b []byte) []byte { return b[:len(b)/2/4096*4096] },
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".db")
			write(t, path)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			before := damage(b)
			if err := os.WriteFile(path, before, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{ReadOnly: true})
			if err == nil {
				_, err = s.Counts()
				if err == nil {
					_, err = s.List(Pending)
				}
				if err == nil {
					_, err = s.List()
				}
				s.Close()
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "mv "+path) {
				t.Errorf("err = %v; want ErrCorrupt saying how to move the file aside", err)
			}
			if after, _ := os.ReadFile(path); string(after) != string(before) {
				t.Error("a read-only reader changed a damaged file")
			}
		})
	}
}

// TestFinishedDropsParts checks that a finished image's record drops the
// parts of its completed uploads, and keeps the rest of its story.
func TestFinishedDropsParts(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	img := newImage("a.mha")
	if err := s.Create(img); err != nil {
		t.Fatal(err)
	}
	parts := []Part{{Number: 1, ETag: `"x"`, Size: 10}}
	if _, err := s.Update(img.ID, func(r *Image) error {
		r.State = Uploading
		r.Uploads = []Upload{{Filename: "a.mha", PK: "u1", Size: 10, Parts: parts}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(img.ID, func(r *Image) error {
		r.State, r.Uploads[0].Completed = Uploaded, true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(img.ID); len(got.Uploads[0].Parts) != 1 {
		t.Fatalf("uploaded: parts = %v; want them kept until the image is finished", got.Uploads[0].Parts)
	}
	walk(t, s, img.ID, Attaching, Importing, Done, Finished)
	got, err := s.Get(img.ID)
	if err != nil {
		t.Fatal(err)
	}
	if u := got.Uploads[0]; len(u.Parts) != 0 || u.PK != "u1" || !u.Completed || u.Size != 10 || len(got.Files) != 1 {
		t.Errorf("finished: upload %+v, %d files; want no parts, the upload's pk, size and completion, and the file", u, len(got.Files))
	}
}
