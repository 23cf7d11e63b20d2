package ingest

import (
	"context"
	"errors"
	"os"
	"slices"

	"github.com/gcingest/gcingest/state"
)

// errInArchive ends an upload whose content, once hashed, was found in the
// archive already: the image was marked a duplicate and nothing more of it
// is sent.
var errInArchive = errors.New("content already in the archive")

// runningHash is a file's SHA-256 computed in the background while its
// parts are sent (hashWhileSent), from the handle they are read from.
type runningHash struct {
	cancel context.CancelFunc
	done   chan struct{}
	sum    string
	err    error
}

// testHookHashWhileSent, when set by a test, runs in the hashing goroutine
// before it reads: a test holds the hash there to show the parts leave
// without it.
var testHookHashWhileSent func()

// startHash starts hashing f. The caller must call stop before f is
// closed.
func startHash(ctx context.Context, f *os.File) *runningHash {
	ctx, cancel := context.WithCancel(ctx)
	h := &runningHash{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		if testHookHashWhileSent != nil {
			testHookHashWhileSent()
		}
		h.sum, h.err = hashOpen(ctx, f)
	}()
	return h
}

// wait returns the hash once it is done, or ctx's error.
func (h *runningHash) wait(ctx context.Context) (string, error) {
	select {
	case <-h.done:
		return h.sum, h.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// stop ends the hashing, if still under way, and waits for it: no
// goroutine reads the file after its upload step returns.
func (h *runningHash) stop() {
	h.cancel()
	<-h.done
}

// finishHash completes the plan of an image whose file j was hashed while
// it was sent, before its upload is completed: it waits for the hash,
// checks the file is still the one whose parts went, and looks for the
// content in the archive, as alreadyInArchive does before a hashed file's
// first byte. Content found there marks the image a duplicate and returns
// errInArchive. The hash and the title it gives go with the image's next
// commit (the duplicate mark, or the item intent), as a hashed file's
// plan goes with its upload's pk: a crash before it hashes the file again
// on resume and looks again, so no commit can leave the hash known and
// the look not made.
func (ul *uploader) finishHash(ctx context.Context, img *state.Image, j int, h *runningHash) error {
	sum, err := h.wait(ctx)
	if err != nil {
		return err
	}
	if changed, err := changedFile(img, "while it was sent"); err != nil {
		return err
	} else if changed != "" {
		return &changedError{file: changed}
	}
	w, err := ul.watchOf(img)
	if err != nil {
		return err
	}
	files := slices.Clone(img.Files)
	files[j].SHA256 = sum
	// Not a DICOM series (hashWhileSent): nothing de-identified, no secret.
	title, err := renderTitle(w.Title, img.Key, files, nil, w.Deidentify)
	if err != nil {
		return err
	}
	path := files[j].Path
	ul.saveLater(img, func(r *state.Image) {
		for k := range r.Files {
			if r.Files[k].Path == path {
				r.Files[k].SHA256 = sum
			}
		}
		r.Title = title
	})
	held, err := ul.inArchive(ctx, img)
	if err != nil {
		return err
	}
	if held {
		return errInArchive
	}
	return nil
}
