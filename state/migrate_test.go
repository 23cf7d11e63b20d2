package state

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// v2Fixtures are state files written by the schema-2 pipeline (see
// ingest/statev2_gen_test.go): lone images of each kind and folder items
// at every state.
func v2Fixtures(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "ingest", "testdata", "statev2", "*.db"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 20 {
		t.Fatalf("found %d schema-2 fixtures; want the 20 or more in ingest/testdata/statev2", len(files))
	}
	return files
}

// rawRecords reads every image record of a state file as JSON objects,
// by ID, without the state package's types.
func rawRecords(t *testing.T, path string) map[string]map[string]any {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string]map[string]any{}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketImages).ForEach(func(k, v []byte) error {
			var m map[string]any
			if err := json.Unmarshal(v, &m); err != nil {
				return err
			}
			out[string(k)] = m
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestMigrateV2 opens every schema-2 fixture with this build and checks
// each record against its schema-2 original: a lone image that planned
// its uploads holds its one image value, a ZIP image's spool became its
// upload's ZipOf, and nothing else changed; the indexes still find every
// record.
func TestMigrateV2(t *testing.T) {
	for _, fx := range v2Fixtures(t) {
		t.Run(filepath.Base(fx), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "state.db")
			copyFile(t, fx, p)
			before := rawRecords(t, p)
			if len(before) == 0 {
				t.Fatal("fixture holds no records")
			}
			s, err := Open(p, Options{})
			if err != nil {
				t.Fatal(err)
			}
			imgs, err := s.List()
			if err != nil {
				t.Fatal(err)
			}
			counts, err := s.Counts()
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			after := rawRecords(t, p)
			if got, want := len(after), len(before); got != want {
				t.Fatalf("got %d records after the upgrade, want %d", got, want)
			}
			if got, want := len(imgs), len(before); got != want {
				t.Errorf("List returns %d images, want %d", got, want)
			}
			perState := map[State]int{}
			for _, img := range imgs {
				perState[img.State]++
				checkMigrated(t, img, before[string(idKey(img.ID))], after[string(idKey(img.ID))])
			}
			if !reflect.DeepEqual(counts, perState) {
				t.Errorf("Counts = %v; the records say %v", counts, perState)
			}
		})
	}
}

func checkMigrated(t *testing.T, img Image, old, now map[string]any) {
	t.Helper()
	for _, gone := range []string{"spool", "prev_value"} {
		if _, ok := now[gone]; ok {
			t.Errorf("image %d (%s %s) still has %s", img.ID, img.Kind, img.State, gone)
		}
	}
	// Everything but the migrated fields is as it was.
	strip := func(m map[string]any) map[string]any {
		c := map[string]any{}
		for k, v := range m {
			switch k {
			case "spool", "prev_value", "values", "uploads":
				continue
			}
			c[k] = v
		}
		return c
	}
	if !reflect.DeepEqual(strip(now), strip(old)) {
		t.Errorf("image %d: fields changed beyond values and uploads:\n got %v\nwant %v", img.ID, strip(now), strip(old))
	}
	oldUploads, _ := old["uploads"].([]any)
	if got, want := len(img.Uploads), len(oldUploads); got != want {
		t.Fatalf("image %d: %d uploads after the upgrade, want %d", img.ID, got, want)
	}
	if img.Kind == "folder" {
		if !reflect.DeepEqual(now["values"], old["values"]) || !reflect.DeepEqual(now["uploads"], old["uploads"]) {
			t.Errorf("folder item %d: values or uploads changed", img.ID)
		}
		return
	}
	if len(img.Uploads) == 0 {
		if len(img.Values) != 0 {
			t.Errorf("image %d (%s) has no uploads but %d values", img.ID, img.State, len(img.Values))
		}
		return
	}
	var rels []string
	for _, f := range img.Files {
		rels = append(rels, f.Rel)
	}
	if len(img.Values) != 1 {
		t.Fatalf("image %d (%s %s) has %d values; want its one image value", img.ID, img.Kind, img.State, len(img.Values))
	}
	v := img.Values[0]
	var all []int
	for i := range img.Uploads {
		all = append(all, i)
	}
	prev, _ := old["prev_value"].(string)
	confirmed := img.State == Done || img.State == Finished || img.State == Duplicate
	if v.Kind != ValueImage || v.Interface != "" || !slices.Equal(v.Files, rels) || !slices.Equal(v.Uploads, all) ||
		v.Prev != prev || v.Confirmed != confirmed {
		t.Errorf("image %d (%s %s) value = %+v; want an image value of files %v, uploads %v, prev %q, confirmed %v",
			img.ID, img.Kind, img.State, v, rels, all, prev, confirmed)
	}
	spool, _ := old["spool"].(string)
	for i, u := range img.Uploads {
		ou := oldUploads[i].(map[string]any)
		if ou["path"] != u.Path || ou["pk"] != nilIfEmpty(u.PK) {
			t.Errorf("image %d upload %d changed: %+v, was %v", img.ID, i, u, ou)
		}
		wantZip := []string(nil)
		if spool != "" {
			wantZip = rels
			if u.Path != spool {
				t.Errorf("image %d: the ZIP upload sends %s, but its spool was %s", img.ID, u.Path, spool)
			}
		}
		if !slices.Equal(u.ZipOf, wantZip) {
			t.Errorf("image %d upload %d ZipOf = %v; want %v", img.ID, i, u.ZipOf, wantZip)
		}
	}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// TestMigrateV3 writes a schema-3 file holding records in the legacy state
// "item" (and one retrying to resume in it) as schema 3 allowed, opens it
// with this build and checks that they are uploaded, that the state index
// says so, and that nothing else changed.
func TestMigrateV3(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.db")
	s, err := open(p, Options{}, 3, migrations()[:2])
	if err != nil {
		t.Fatal(err)
	}
	recs := []*Image{
		{ID: 1, Watch: "/drop", Key: "a.mha", State: legacyItem, ItemPK: "it1", LastError: "503",
			Errors: []ErrorNote{{State: legacyItem, Msg: "503"}}},
		{ID: 2, Watch: "/drop", Key: "b.mha", State: Retrying, RetryFrom: legacyItem, Attempts: 2},
		{ID: 3, Watch: "/drop", Key: "c.mha", State: Retrying, RetryFrom: Uploading},
		{ID: 4, Watch: "/drop", Key: "d.mha", State: Finished, ActionDone: true},
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		for _, img := range recs {
			if _, err := tx.Bucket(bucketImages).NextSequence(); err != nil {
				return err
			}
			if err := put(tx, img, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before := rawRecords(t, p)

	s = openTest(t, p)
	var version uint64
	if err := s.db.View(func(tx *bolt.Tx) error {
		version = binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(keySchema))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, want := version, uint64(SchemaVersion); got != want {
		t.Errorf("schema version %d after the upgrade, want %d", got, want)
	}
	want := map[uint64][2]State{1: {Uploaded, ""}, 2: {Retrying, Uploaded}, 3: {Retrying, Uploading}, 4: {Finished, ""}}
	for id, w := range want {
		img, err := s.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if got := [2]State{img.State, img.RetryFrom}; got != w {
			t.Errorf("image %d: state, retry_from = %v; want %v", id, got, w)
		}
	}
	if imgs, _ := s.List(legacyItem); len(imgs) != 0 {
		t.Errorf("the state index still lists %d images under %q", len(imgs), legacyItem)
	}
	if imgs, _ := s.List(Uploaded); len(imgs) != 1 || imgs[0].ID != 1 {
		t.Errorf("the state index lists %v under uploaded; want image 1", imgs)
	}
	counts, err := s.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := counts, map[State]int{Uploaded: 1, Retrying: 2, Finished: 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("Counts = %v; want %v", got, want)
	}
	if imgs, _ := s.Unfinished(); len(imgs) != 3 {
		t.Errorf("Unfinished = %d images; want 3", len(imgs))
	}
	// The upgraded image goes on along the table, as an uploaded one.
	if _, err := s.Update(1, func(r *Image) error { r.State = Attaching; return nil }); err != nil {
		t.Error(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	after := rawRecords(t, p)
	for k, old := range before {
		now := after[k]
		for _, f := range []string{"state", "retry_from"} {
			if old[f] == string(legacyItem) {
				old[f] = string(Uploaded)
			}
		}
		delete(old, "updated")
		delete(now, "updated")
		if k == string(idKey(1)) {
			old["state"] = string(Attaching)
		}
		if !reflect.DeepEqual(now, old) {
			t.Errorf("image %x: got %v after the upgrade, want %v", k, now, old)
		}
	}
}
