package agent

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gcingest/gcingest/state"
)

// ForgetInState dismisses failed images for good while no agent runs
// (gcingest forget): it opens the state file at statePath and moves each
// image with ids (decimal) from failed to dismissed. It returns the IDs
// dismissed, and an error naming each image it refused and why.
func ForgetInState(statePath string, ids []string) ([]string, error) {
	st, err := state.Open(statePath, state.Options{Timeout: 500 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return forgetIDs(st, ids)
}

// Forget dismisses failed images on the running agent's state file (POST
// /forget). The pipeline holds no failed image whose files are dealt
// with, the only kind Dismiss accepts, so it needs telling nothing.
func (s *pipelineSource) Forget(ctx context.Context, ids []string) ([]string, error) {
	return forgetIDs(s.st, ids)
}

// forgetIDs dismisses each image with ids (decimal) in its own commit, so
// that one refused leaves the others dismissed, and returns the IDs
// dismissed.
func forgetIDs(st *state.Store, ids []string) ([]string, error) {
	var done []string
	var errs []error
	for _, id := range ids {
		n, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("image ID %q is not a number; the IDs are in the first column of gcingest status", id))
			continue
		}
		if _, err := st.Dismiss(n); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, id)
	}
	return done, errors.Join(errs...)
}
