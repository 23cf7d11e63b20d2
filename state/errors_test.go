package state

import (
	"fmt"
	"path/filepath"
	"testing"
)

func TestUpdateKeepsErrorHistory(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	img := newImage("a.mha")
	if err := s.Create(img); err != nil {
		t.Fatal(err)
	}
	set := func(st State, msg string) {
		t.Helper()
		if _, err := s.Update(img.ID, func(r *Image) error { r.State, r.LastError = st, msg; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	set(Retrying, "upload a.mha part 1: 503")
	set(Retrying, "upload a.mha part 1: 503") // the same error again is not a new one
	set(Uploading, "")
	set(Failed, "archive: Invalid hyperlink - Object does not exist.")
	got, err := s.Get(img.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Errors) != 2 {
		t.Fatalf("got %d errors %+v, want 2", len(got.Errors), got.Errors)
	}
	if got.Errors[0].State != Pending || got.Errors[0].Msg != "upload a.mha part 1: 503" || got.Errors[0].At.IsZero() {
		t.Errorf("first error %+v", got.Errors[0])
	}
	if got.Errors[1].State != Uploading || got.Errors[1].Msg != "archive: Invalid hyperlink - Object does not exist." {
		t.Errorf("second error %+v", got.Errors[1])
	}

	t.Run("only the last MaxErrors are kept", func(t *testing.T) {
		for i := range MaxErrors + 5 {
			set(Failed, fmt.Sprintf("error %d", i))
		}
		got, _ := s.Get(img.ID)
		if len(got.Errors) != MaxErrors || got.Errors[MaxErrors-1].Msg != fmt.Sprintf("error %d", MaxErrors+4) {
			t.Errorf("got %d errors, last %+v", len(got.Errors), got.Errors[len(got.Errors)-1])
		}
	})
}

func TestDelete(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	a, b := newImage("a.mha"), newImage("b.mha")
	for _, img := range []*Image{a, b} {
		if err := s.Create(img); err != nil {
			t.Fatal(err)
		}
	}
	walk(t, s, a.ID, Attaching, Finished)
	n, err := s.Delete(a.ID, 999)
	if err != nil || n != 1 {
		t.Fatalf("Delete = %d, %v; want 1, nil", n, err)
	}
	if _, err := s.Get(a.ID); err == nil {
		t.Error("the deleted image is still there")
	}
	counts, _ := s.Counts()
	if counts[Finished] != 0 || counts[Pending] != 1 {
		t.Errorf("counts after delete %v, want pending 1 only", counts)
	}
	if imgs, _ := s.ByKey("/drop", "a.mha"); len(imgs) != 0 {
		t.Errorf("the key index still names %d images", len(imgs))
	}
	if imgs, _ := s.List(Finished); len(imgs) != 0 {
		t.Errorf("the state index still names %d images", len(imgs))
	}
}
