package ingest

import (
	"fmt"

	"github.com/gcingest/gcingest/state"
)

// supersedeOlder marks the failed records of img's folder or file that a
// newer image, img, has now landed (an operator fixed the folder in place
// and it came back as a new image, say) as superseded: they no longer
// count as failed, so status and an alert on failed images clear, and
// each keeps its story. A failed record still holding its files in
// failed_dir is superseded as well: what landed is newer. A write that
// fails is logged: the next image of the key to land tries again.
func (rs *records) supersedeOlder(img *state.Image) {
	recs, err := rs.store.ByKey(img.Watch, img.Key)
	if err != nil {
		rs.log.Warn("could not read the earlier images of a landed one", "id", img.ID, "key", img.Key, "err", err)
		return
	}
	for _, r := range recs {
		if r.ID >= img.ID || r.State != state.Failed || !r.ActionDone {
			continue
		}
		_, err := rs.store.Update(r.ID, func(rec *state.Image) error {
			if rec.State != state.Failed {
				return nil // retried meanwhile
			}
			rec.State = state.Superseded
			rec.LastError = fmt.Sprintf("superseded by image %d, which landed in archive item %s; it had failed: %s", img.ID, img.ItemPK, rec.LastError)
			return nil
		})
		if err != nil {
			rs.log.Warn("could not mark an earlier failed image superseded", "id", r.ID, "by", img.ID, "err", err)
			continue
		}
		rs.log.Info("earlier failed image superseded", "id", r.ID, "by", img.ID, "key", img.Key)
	}
}
