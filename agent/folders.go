package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/gcingest/gcingest/config"
)

// CheckResolvedFolders repeats the config's overlap rules on the folders as
// the file system resolves them. The config compares paths as written, so a
// done_dir that is a symlink into the drop folder (or two watch paths that
// are one folder under two names) passes it, and then every moved file is
// picked up and uploaded again, without end. The error is a *ConfigError
// naming the keys.
func CheckResolvedFolders(cfg *config.Config) error {
	type folder struct{ key, path, real string }
	var watches []folder
	var errs []error
	for i, w := range cfg.Watch {
		rw, err := resolve(w.Path)
		if err != nil {
			continue // a missing drop folder is reported by the caller
		}
		for _, d := range []struct{ k, p string }{{"done_dir", w.DoneDir}, {"failed_dir", w.FailedDir}} {
			if d.p == "" {
				continue
			}
			rd, err := resolve(d.p)
			if err != nil {
				continue
			}
			if isWithin(rw, rd) {
				errs = append(errs, fmt.Errorf("watch[%d].%s: %s resolves to %s, inside the watched folder %s: put it beside the drop folder, or its files would be picked up and uploaded again", i, d.k, d.p, rd, rw))
			}
		}
		for _, o := range watches {
			if isWithin(o.real, rw) || isWithin(rw, o.real) {
				errs = append(errs, fmt.Errorf("watch[%d].path: %s resolves to %s, which overlaps %s.path %s (%s): give each watch its own folder", i, w.Path, rw, o.key, o.path, o.real))
			}
		}
		watches = append(watches, folder{fmt.Sprintf("watch[%d]", i), w.Path, rw})
	}
	if len(errs) > 0 {
		return &ConfigError{errors.Join(errs...)}
	}
	return nil
}

// resolve returns p with every symlink resolved. A folder that does not exist
// yet is resolved through its nearest existing parent, because the link that
// matters may be that parent.
func resolve(p string) (string, error) {
	p = filepath.Clean(p)
	var rest []string
	for {
		r, err := filepath.EvalSymlinks(p)
		if err == nil {
			return filepath.Join(append([]string{r}, rest...)...), nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(p)
		if parent == p {
			return "", err
		}
		rest = append([]string{filepath.Base(p)}, rest...)
		p = parent
	}
}

// isWithin reports whether p is root or inside it; both already resolved.
func isWithin(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}
