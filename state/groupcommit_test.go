package state

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestGroupCommit runs many writers at once (run it with -race): every
// committed update counts exactly once, a refused update writes nothing,
// and an operation that fails after writing spoils only itself: the batch
// it shared is committed again without it.
func TestGroupCommit(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	const images, writers, updates = 4, 8, 25
	var ids []uint64
	for i := range images {
		img := newImage(fmt.Sprintf("k%d", i))
		if err := s.Create(img); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, img.ID)
	}
	errRefused := errors.New("refused")
	errBoom := errors.New("boom")
	poison := []byte("poison")
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range updates {
				if _, err := s.Update(ids[w%images], func(r *Image) error { r.Attempts++; return nil }); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// Refused and dirty operations, interleaved with the updates so that
	// they share batches with them.
	var refused, dirty []error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range updates {
			_, err := s.Update(ids[0], func(r *Image) error { r.LastError = "must not be written"; return errRefused })
			refused = append(refused, err)
			err = s.write(func(tx *bolt.Tx) error {
				if err := tx.Bucket(bucketMeta).Put(poison, []byte("x")); err != nil {
					return err
				}
				return &dirtyError{errBoom}
			})
			dirty = append(dirty, err)
		}
	}()
	wg.Wait()

	for i, err := range refused {
		if !errors.Is(err, errRefused) {
			t.Errorf("refused update %d: err = %v, want %v", i, err, errRefused)
		}
	}
	for i, err := range dirty {
		if !errors.Is(err, errBoom) {
			t.Errorf("failing operation %d: err = %v, want %v", i, err, errBoom)
		}
	}
	total := 0
	for _, id := range ids {
		img, err := s.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		total += img.Attempts
		if img.LastError != "" {
			t.Errorf("image %d has last_error %q from a refused update", id, img.LastError)
		}
	}
	if got, want := total, writers*updates; got != want {
		t.Errorf("committed attempts = %d, want %d (an update lost or applied twice)", got, want)
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta).Get(poison) != nil {
			return errors.New("a failed operation's write was committed")
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
