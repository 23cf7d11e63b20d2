package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openTest(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path, Options{Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	// Registered after Close, so it runs before: whatever the test did,
	// the counts kept with each move agree with the state index.
	t.Cleanup(func() { assertCounts(t, s) })
	return s
}

func newImage(key string) *Image {
	return &Image{Watch: "/drop", Key: key, Kind: "single",
		Files: []File{{Rel: key, Path: "/drop/" + key, Size: 10, ModTime: time.Unix(100, 0).UTC()}}}
}

func TestCreateGetUpdate(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	a, b := newImage("a.mha"), newImage("b.mha")
	for _, img := range []*Image{a, b} {
		if err := s.Create(img); err != nil {
			t.Fatal(err)
		}
	}
	if a.ID == 0 || b.ID <= a.ID {
		t.Fatalf("IDs = %d, %d; want increasing from 1", a.ID, b.ID)
	}
	got, err := s.Get(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != Pending || got.Key != "a.mha" || len(got.Files) != 1 {
		t.Errorf("Get = %+v; want a pending a.mha with one file", got)
	}
	upd, err := s.Update(a.ID, func(img *Image) error {
		img.State = Uploading
		img.Uploads = append(img.Uploads, Upload{Filename: "a.mha", PK: "u1", Parts: []Part{{Number: 1, ETag: `"x"`, Size: 10}}})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if upd.State != Uploading || upd.Uploads[0].Parts[0].ETag != `"x"` {
		t.Errorf("Update returned %+v", upd)
	}
	// A failing fn writes nothing.
	boom := errors.New("boom")
	if _, err := s.Update(a.ID, func(img *Image) error { img.State = Failed; return boom }); !errors.Is(err, boom) {
		t.Errorf("Update err = %v; want boom", err)
	}
	got, _ = s.Get(a.ID)
	if got.State != Uploading {
		t.Errorf("state after failed update = %s; want uploading", got.State)
	}
	if _, err := s.Get(999); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(999) err = %v; want ErrNotFound", err)
	}
}

func TestIndexes(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	var ids []uint64
	for _, k := range []string{"x", "y", "x", "xy"} {
		img := newImage(k)
		if err := s.Create(img); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, img.ID)
	}
	walk(t, s, ids[1], Attaching, Finished)
	if _, err := s.Update(ids[1], func(img *Image) error { img.ActionDone = true; return nil }); err != nil {
		t.Fatal(err)
	}
	t.Run("by state", func(t *testing.T) {
		pend, err := s.List(Pending)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(pend); got != 3 {
			t.Errorf("pending = %d; want 3", got)
		}
		fin, _ := s.List(Finished)
		if len(fin) != 1 || fin[0].ID != ids[1] {
			t.Errorf("finished = %+v; want image %d", fin, ids[1])
		}
		unf, _ := s.Unfinished()
		if len(unf) != 3 {
			t.Errorf("unfinished = %d; want 3", len(unf))
		}
		counts, _ := s.Counts()
		if counts[Pending] != 3 || counts[Finished] != 1 {
			t.Errorf("counts = %v", counts)
		}
	})
	t.Run("by key", func(t *testing.T) {
		got, err := s.ByKey("/drop", "x")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].ID != ids[0] || got[1].ID != ids[2] {
			t.Errorf("ByKey(x) = %d images; want %d and %d (not xy)", len(got), ids[0], ids[2])
		}
	})
	t.Run("create unless", func(t *testing.T) {
		created, err := s.CreateUnless(newImage("x"), func(ex []Image) bool { return len(ex) > 0 })
		if err != nil || created {
			t.Errorf("CreateUnless(existing) = %v, %v; want false, nil", created, err)
		}
		created, err = s.CreateUnless(newImage("z"), func(ex []Image) bool { return len(ex) > 0 })
		if err != nil || !created {
			t.Errorf("CreateUnless(new) = %v, %v; want true, nil", created, err)
		}
	})
	t.Run("create each", func(t *testing.T) {
		// One call: a known key is skipped, a new one created, and a
		// second image of that new key sees the first.
		imgs := []*Image{newImage("x"), newImage("w"), newImage("w")}
		var seen []int
		created, err := s.CreateEach(imgs, func(i int, ex []Image) bool {
			seen = append(seen, len(ex))
			return len(ex) > 0
		})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(created, []bool{false, true, false}) || !slices.Equal(seen, []int{2, 0, 1}) {
			t.Errorf("CreateEach = %v, skip saw %v existing; want [false true false] and [2 0 1]", created, seen)
		}
		got, err := s.ByKey("/drop", "w")
		if err != nil || len(got) != 1 || got[0].ID != imgs[1].ID || got[0].State != Pending {
			t.Errorf("ByKey(w) = %+v, %v; want only image %d, pending", got, err, imgs[1].ID)
		}
	})
}

func TestReopenKeepsRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	img := newImage("a")
	if err := s.Create(img); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, path)
	got, err := s.Get(img.ID)
	if err != nil || got.Key != "a" {
		t.Fatalf("after reopen Get = %+v, %v", got, err)
	}
	next := newImage("b")
	if err := s.Create(next); err != nil {
		t.Fatal(err)
	}
	if next.ID <= img.ID {
		t.Errorf("ID after reopen = %d; want > %d", next.ID, img.ID)
	}
}

func TestSecondOpenerFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	openTest(t, path)
	for _, ro := range []bool{false, true} {
		_, err := Open(path, Options{ReadOnly: ro, Timeout: 50 * time.Millisecond})
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second Open(readonly=%v) err = %v; want ErrLocked", ro, err)
		}
		if want := "another gcingest is using " + path; !strings.Contains(err.Error(), want) {
			t.Errorf("err = %q; want it to say %q", err, want)
		}
	}
}

func TestReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	if _, err := Open(path, Options{ReadOnly: true}); err == nil {
		t.Fatal("read-only Open of a missing file succeeded; want an error")
	}
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(newImage("a")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	r1, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	// Two status commands may read at once.
	r2, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("second read-only Open: %v", err)
	}
	defer r2.Close()
	imgs, err := r2.List()
	if err != nil || len(imgs) != 1 {
		t.Errorf("List = %d images, %v; want 1", len(imgs), err)
	}
	if err := r1.Create(newImage("b")); err == nil {
		t.Error("Create on a read-only store succeeded")
	}
}

func TestCorruptFile(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]func(path string) error{
		"garbage": func(path string) error {
			return os.WriteFile(path, []byte(strings.Repeat("not a bbolt file ", 1000)), 0o600)
		},
		"too short for a header": func(path string) error {
			return os.WriteFile(path, []byte(strings.Repeat("garbage", 500)), 0o600)
		},
		"damaged meta": func(path string) error {
			s, err := Open(path, Options{})
			if err != nil {
				return err
			}
			for i := range 20 {
				if err := s.Create(newImage(string(rune('a' + i)))); err != nil {
					return err
				}
			}
			s.Close()
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for i := 16; i < 2*4096 && i < len(b); i++ { // both meta pages
				b[i] ^= 0x5a
			}
			return os.WriteFile(path, b, 0o600)
		},
	}
	for _, frac := range []int64{2, 3} {
		cases[fmt.Sprintf("truncated to 1/%d", frac)] = func(path string) error {
			s, err := Open(path, Options{})
			if err != nil {
				return err
			}
			for i := range 400 {
				if err := s.Create(newImage(fmt.Sprintf("img%03d", i))); err != nil {
					return err
				}
			}
			s.Close()
			fi, err := os.Stat(path)
			if err != nil {
				return err
			}
			return os.Truncate(path, fi.Size()/frac/4096*4096)
		}
	}
	cases["damaged data pages"] = func(path string) error {
		s, err := Open(path, Options{})
		if err != nil {
			return err
		}
		for i := range 400 {
			if err := s.Create(newImage(fmt.Sprintf("img%03d", i))); err != nil {
				return err
			}
		}
		s.Close()
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i := 4 * 4096; i < len(b); i += 4096 {
			copy(b[i:], "garbage header!!")
		}
		return os.WriteFile(path, b, 0o600)
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.NewReplacer(" ", "_", "/", "-").Replace(name)+".db")
			if err := damage(path); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(path)
			_, err := Open(path, Options{})
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open err = %v; want ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), "mv "+path) {
				t.Errorf("err = %q; want it to say how to move the file aside", err)
			}
			after, _ := os.ReadFile(path)
			if string(before) != string(after) {
				t.Error("Open changed a damaged file; it must leave it as it was")
			}
		})
	}
}

func TestMigrate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := openTest(t, path)
	if err := s.Create(newImage("a")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	next := SchemaVersion + 1

	t.Run("upgrade runs the table", func(t *testing.T) {
		migs := append(migrations(), migration{From: SchemaVersion, Fn: func(tx *bolt.Tx) error {
			_, err := tx.CreateBucket([]byte("next-extra"))
			return err
		}})
		s, err := open(path, Options{}, next, migs)
		if err != nil {
			t.Fatalf("open with v%d: %v", next, err)
		}
		var version uint64
		var extra bool
		s.db.View(func(tx *bolt.Tx) error {
			version = binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(keySchema))
			extra = tx.Bucket([]byte("next-extra")) != nil
			return nil
		})
		imgs, _ := s.List()
		s.Close()
		if int(version) != next || !extra || len(imgs) != 1 {
			t.Errorf("after migration: version %d, bucket %v, %d images; want %d, true, 1", version, extra, len(imgs), next)
		}
	})
	t.Run("newer file refused", func(t *testing.T) {
		_, err := Open(path, Options{}) // the file is newer now than this build
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("schema version %d", next)) {
			t.Errorf("Open of a newer file err = %v; want a schema version error", err)
		}
	})
	t.Run("missing step refused", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "old.db")
		openTest(t, p).Close()
		_, err := open(p, Options{}, SchemaVersion+2, nil)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("no migration from schema version %d", SchemaVersion)) {
			t.Errorf("err = %v; want a missing migration error", err)
		}
	})
	t.Run("version 1 file keeps its images", func(t *testing.T) {
		// A file written before folder items: its records read the same,
		// and (schema 3) a lone image that planned its uploads holds its
		// one image value, its interface left to the pipeline to fill in.
		p := filepath.Join(t.TempDir(), "v1.db")
		s, err := open(p, Options{}, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		img := newImage("old")
		img.Uploads = []Upload{{Filename: "a.mha", PK: "u1", Completed: true}}
		if err := s.Create(img); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s = openTest(t, p)
		got, err := s.Get(img.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Key != "old" || len(got.Uploads) != 1 || got.Uploads[0].PK != "u1" || got.TargetItem {
			t.Errorf("v1 image after upgrade = %+v; want its key and upload unchanged", got)
		}
		want := []Value{{Kind: ValueImage, Files: []string{"old"}, Uploads: []int{0}}}
		if !reflect.DeepEqual(got.Values, want) {
			t.Errorf("v1 image's values after upgrade = %+v; want %+v", got.Values, want)
		}
		updated, err := s.Update(img.ID, func(r *Image) error {
			r.Values = []Value{{Interface: "report", Kind: ValueFile, Files: []string{"x/r.pdf"}, Uploads: []int{0}}}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(updated.Values) != 1 || updated.Values[0].Uploads[0] != 0 {
			t.Errorf("values after update = %+v", updated.Values)
		}
	})
}
