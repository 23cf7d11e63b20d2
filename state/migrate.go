package state

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// migrateV2 rewrites every record of a schema-2 file for schema 3, in the
// transaction of the upgrade:
//
//   - a lone image (any kind but "folder") that has planned its uploads
//     gets its one value: an image value from all its files and uploads,
//     with the item's previous image URL (prev_value) as Value.Prev, and
//     confirmed once the image was done (or found in the archive already).
//     Its interface stays empty: schema 2 took it from the watch at every
//     step, and the pipeline fills it in from the watch on resuming.
//   - a ZIP image's spool (spool) becomes its upload's ZipOf, the list of
//     files the ZIP is rebuilt from, as a folder item's ZIPs always had.
//   - prev_value and spool are dropped.
//
// A pending record has no uploads yet and plans its value when hashed, as
// every new record does. Indexes (state, key) do not change.
func migrateV2(tx *bolt.Tx) error {
	b := tx.Bucket(bucketImages)
	type rewrite struct{ k, v []byte }
	var out []rewrite
	err := b.ForEach(func(k, v []byte) error {
		nv, err := upgradeV2Record(v)
		if err != nil {
			return fmt.Errorf("image %x: %w", k, err)
		}
		out = append(out, rewrite{slices.Clone(k), nv})
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range out { // not inside ForEach: bbolt forbids writes while iterating
		if err := b.Put(r.k, r.v); err != nil {
			return err
		}
	}
	return nil
}

// v2Only are the schema-2 fields schema 3 dropped.
type v2Only struct {
	Spool     string `json:"spool"`
	PrevValue string `json:"prev_value"`
}

func upgradeV2Record(v []byte) ([]byte, error) {
	var old v2Only
	if err := json.Unmarshal(v, &old); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	var img Image
	if err := json.Unmarshal(v, &img); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if img.Kind != "folder" && len(img.Uploads) > 0 && len(img.Values) == 0 {
		var rels []string
		for _, f := range img.Files {
			rels = append(rels, f.Rel)
		}
		if old.Spool != "" && len(img.Uploads) == 1 && len(img.Uploads[0].ZipOf) == 0 {
			img.Uploads[0].ZipOf = slices.Clone(rels)
		}
		val := Value{Kind: ValueImage, Files: rels, Prev: old.PrevValue}
		for i := range img.Uploads {
			val.Uploads = append(val.Uploads, i)
		}
		switch img.State {
		case Done, Finished, Duplicate:
			val.Confirmed = true
		}
		img.Values = []Value{val}
	}
	nv, err := json.Marshal(&img)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return nv, nil
}

// legacyItem is the state schema 3 and older knew as "item" (the archive
// item's pk known): no step wrote it any more, but one could be found in
// an old file, and the item step handled it as it handles Uploaded.
const legacyItem State = "item"

// migrateV3 moves every record of a schema-3 file in the legacy state
// "item" to Uploaded, the state whose step (stepItem) resumed it, and a
// retrying record that resumes in "item" to resume in Uploaded; the state
// index follows. Nothing else in a record changes, its error history
// included (it says what the state was then).
func migrateV3(tx *bolt.Tx) error {
	b, bs := tx.Bucket(bucketImages), tx.Bucket(bucketByState)
	type rewrite struct {
		k, v  []byte
		moved bool // the state changed, not only RetryFrom
	}
	var out []rewrite
	uploaded, err := json.Marshal(Uploaded)
	if err != nil {
		return err
	}
	err = b.ForEach(func(k, v []byte) error {
		var rec map[string]json.RawMessage
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("image %x: decode: %w", k, err)
		}
		var st, from State
		if err := unmarshalField(rec, "state", &st); err != nil {
			return fmt.Errorf("image %x: %w", k, err)
		}
		if err := unmarshalField(rec, "retry_from", &from); err != nil {
			return fmt.Errorf("image %x: %w", k, err)
		}
		if st != legacyItem && from != legacyItem {
			return nil
		}
		if st == legacyItem {
			rec["state"] = uploaded
		}
		if from == legacyItem {
			rec["retry_from"] = uploaded
		}
		nv, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("image %x: encode: %w", k, err)
		}
		out = append(out, rewrite{slices.Clone(k), nv, st == legacyItem})
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range out { // not inside ForEach: bbolt forbids writes while iterating
		if err := b.Put(r.k, r.v); err != nil {
			return err
		}
		if !r.moved {
			continue
		}
		id := binary.BigEndian.Uint64(r.k)
		if err := bs.Delete(stateKey(legacyItem, id)); err != nil {
			return err
		}
		if err := bs.Put(stateKey(Uploaded, id), nil); err != nil {
			return err
		}
	}
	return nil
}

// unmarshalField decodes rec[name] into v, leaving v as it is when the
// record has no such field.
func unmarshalField(rec map[string]json.RawMessage, name string, v any) error {
	raw, ok := rec[name]
	if !ok {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decode %s: %w", name, err)
	}
	return nil
}

// migrateV4 counts the images in each state from the state index into the
// counts bucket, which every move keeps right from then on (schema 5).
func migrateV4(tx *bolt.Tx) error {
	counts, err := countIndex(tx)
	if err != nil {
		return fmt.Errorf("count the state index: %w", err)
	}
	b, err := tx.CreateBucket(bucketCounts)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketCounts, err)
	}
	for st, n := range counts {
		if err := b.Put([]byte(st), binary.BigEndian.AppendUint64(nil, uint64(n))); err != nil {
			return err
		}
	}
	return nil
}
