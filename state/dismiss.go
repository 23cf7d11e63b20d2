package state

import "fmt"

// Dismiss moves the failed image id to Dismissed, for good: it leaves the
// failed count (and an alert on it clears) and keeps its story, the error
// it failed with included, for status ID. Only a failed image whose
// uploads were aborted and files moved to failed_dir (ActionDone) is
// dismissed; any other is refused with an error naming its state, and
// nothing is written. The check and the move are one transaction, so a
// running pipeline that moves the image meanwhile (a retry) wins or loses
// whole. It returns the image as committed.
func (s *Store) Dismiss(id uint64) (Image, error) {
	return s.Update(id, func(img *Image) error {
		switch {
		case img.State != Failed:
			return fmt.Errorf("image %d is %s, not failed: only a failed image is dismissed", id, img.State)
		case !img.ActionDone:
			// Dismissed, it would leave its files in the drop folder or
			// an upload open for good: the pipeline only finishes the
			// file action of a failed image.
			return fmt.Errorf("image %d has failed, but its uploads are not aborted or its files not moved to failed_dir yet: "+
				"the agent keeps trying (start it if it is stopped); dismiss it once it has", id)
		}
		img.State = Dismissed
		img.LastError = "dismissed by the operator; it had failed: " + img.LastError
		return nil
	})
}
