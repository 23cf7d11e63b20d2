package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/watch"
)

func TestResolvedFolderOverlapIsRefused(t *testing.T) {
	root := t.TempDir()
	drop := filepath.Join(root, "drop")
	other := filepath.Join(root, "other")
	for _, d := range []string{drop, filepath.Join(drop, "sub"), other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := func(name, target string) string {
		p := filepath.Join(root, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	doneLink := link("done", filepath.Join(drop, "sub")) // a done_dir that is the drop folder's subfolder
	failedParent := link("failedparent", drop)           // a failed_dir not created yet, under a link
	dropAlias := link("dropalias", drop)                 // the same folder under a second name
	fine := filepath.Join(other, "done")

	tests := []struct {
		name  string
		watch []watch.Spec
		want  []string // in the error; none: no error
	}{
		{"done_dir through a symlink", []watch.Spec{{Path: drop, AfterUpload: "move", DoneDir: doneLink}},
			[]string{"watch[0].done_dir", doneLink, "inside the watched folder"}},
		{"failed_dir not yet created, parent a symlink", []watch.Spec{{Path: drop, FailedDir: filepath.Join(failedParent, "failed")}},
			[]string{"watch[0].failed_dir", "inside the watched folder"}},
		{"two watches on one folder", []watch.Spec{{Path: drop}, {Path: dropAlias}},
			[]string{"watch[1].path", "overlaps watch[0].path"}},
		{"folders beside each other", []watch.Spec{{Path: drop, AfterUpload: "move", DoneDir: fine}, {Path: other + "2"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckResolvedFolders(&config.Config{Watch: tt.watch})
			if tt.want == nil {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a config error (exit 2)", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
