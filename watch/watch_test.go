package watch

import "testing"

func TestValid(t *testing.T) {
	for _, g := range []Group{GroupAuto, GroupFile, GroupFolder} {
		if !g.Valid() {
			t.Errorf("Group(%q).Valid() = false, want true", g)
		}
	}
	for _, a := range []AfterUpload{AfterUploadKeep, AfterUploadMove, AfterUploadDelete} {
		if !a.Valid() {
			t.Errorf("AfterUpload(%q).Valid() = false, want true", a)
		}
	}
	// "" is not valid: the config applies the default before validating.
	for _, s := range []string{"", "series", "Folder", "archive"} {
		if Group(s).Valid() || AfterUpload(s).Valid() {
			t.Errorf("%q is valid, want neither a grouping nor an action", s)
		}
	}
}

func TestCloneSharesNothing(t *testing.T) {
	s := Spec{Exclude: []string{"*.bak"}, Values: map[string]string{"*.pdf": "report"}}
	c := s.Clone()
	c.Exclude[0] = "*.tmp"
	c.Values["*.pdf"] = "other"
	if s.Exclude[0] != "*.bak" || s.Values["*.pdf"] != "report" {
		t.Errorf("changing the clone changed the original: %+v", s)
	}
}
