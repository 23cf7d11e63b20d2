package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/ingest/group"
	"github.com/gcingest/gcingest/state"
)

// jsonKinds are the socket kinds whose values are JSON (docs/ARCHITECTURE.md,
// "One item, its values").
var jsonKinds = map[string]bool{
	"String": true, "Integer": true, "Float": true, "Bool": true, "Anything": true, "Chart": true,
	"2D bounding box": true, "Multiple 2D bounding boxes": true, "Distance measurement": true,
	"Multiple distance measurements": true, "Point": true, "Multiple points": true, "Polygon": true,
	"Multiple polygons": true, "Line": true, "Multiple lines": true, "Angle": true, "Multiple angles": true,
	"Ellipse": true, "Multiple ellipses": true, "Three-point angle": true, "Multiple three-point angles": true,
	"Affine transform registration": true, "Choice": true, "Multiple choice": true,
}

// isJSONSocket reports whether the socket holds JSON (stored in the
// database or, with super_kind File, as a .json file).
func isJSONSocket(s *gcapi.Interface) bool {
	return jsonKinds[s.Kind] || (s.SuperKind != gcapi.SuperKindImage && strings.HasSuffix(s.RelativePath, ".json"))
}

// checkJSONKind checks a JSON value against the simple kinds' schemas the
// server applies, so a wrong type fails before anything is uploaded. Other
// kinds take any JSON except null (which the server reads as "no value").
func checkJSONKind(kind string, raw json.RawMessage) error {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("not JSON (%v)", err)
	}
	want := ""
	switch kind {
	case "Float":
		if _, ok := v.(float64); !ok {
			want = "a number"
		}
	case "Integer":
		if n, ok := v.(float64); !ok || n != math.Trunc(n) {
			want = "an integer"
		}
	case "String":
		if _, ok := v.(string); !ok {
			want = "a string"
		}
	case "Bool":
		if _, ok := v.(bool); !ok {
			want = "true or false"
		}
	default:
		if v == nil {
			want = "a value, not null"
		}
	}
	if want != "" {
		got := string(raw)
		if len(got) > 60 {
			got = got[:60] + "…"
		}
		return fmt.Errorf("a %s interface needs %s, not %s", kind, want, got)
	}
	return nil
}

// readChecked reads a small file that was hashed and checks it still has
// the hashed content.
func readChecked(f state.File) ([]byte, error) {
	b, err := group.ReadSmall(groupFile(f))
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(b); f.SHA256 != "" && hex.EncodeToString(sum[:]) != f.SHA256 {
		return nil, &changedError{file: f.Path}
	}
	return b, nil
}

// groupFiles is files as package group sees them.
func groupFiles(files []state.File) []group.File {
	out := make([]group.File, len(files))
	for i, f := range files {
		out[i] = groupFile(f)
	}
	return out
}

// relNames lists the files' relative paths for a message.
func relNames(files []state.File) string {
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Rel
	}
	return strings.Join(names, ", ")
}

// groupFile is f as package group sees it.
func groupFile(f state.File) group.File {
	return group.File{Path: f.Path, Rel: f.Rel, Size: f.Size, ModTime: f.ModTime}
}

// stateFiles returns the recorded files (from all, by Rel) that gfs names.
func stateFiles(gfs []group.File, all []state.File) []state.File {
	out := make([]state.File, 0, len(gfs))
	for _, g := range gfs {
		for _, f := range all {
			if f.Rel == g.Rel {
				out = append(out, f)
				break
			}
		}
	}
	return out
}

// changedError says a file changed after it was hashed: hash again.
type changedError struct{ file string }

func (e *changedError) Error() string { return e.file + " changed after it was hashed" }

// jsonEqual compares two JSON texts by meaning (1.90 equals 1.9).
func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

// FolderChecker applies to a folder item every rule the pipeline applies
// when it plans one (values.json, item.txt, [watch.values], the sockets'
// kinds, the JSON values' types), without recording or sending anything.
// `gcingest check` and `gcingest plan` use it, so they cannot disagree with
// run. Sockets are asked once per checker.
type FolderChecker struct{ plan *planner }

// NewFolderChecker returns a checker that asks api about sockets (and about
// the item an item.txt names). log may be nil.
func NewFolderChecker(api API, log *slog.Logger) *FolderChecker {
	var cfg PipelineConfig
	cfg.applyDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &FolderChecker{plan: newPlanner(cfg, nil, api, newServerCache(api, cfg.Now), &deidSecret{path: cfg.SecretPath()}, log)}
}

// Check reports what run would refuse in the folder item key of watch w. An
// error for which IsFolderProblem is true is the folder's to fix; another
// (the network, the server) says nothing about the folder.
func (c *FolderChecker) Check(ctx context.Context, w Watch, key string, files []group.File) error {
	sf := make([]state.File, len(files))
	for i, f := range files {
		sf[i] = state.File{Rel: f.Rel, Path: f.Path, Size: f.Size, ModTime: f.ModTime}
	}
	img := &state.Image{Watch: w.Path, Key: key, Kind: string(KindFolder), Files: sf}
	_, _, _, err := c.plan.folder(ctx, img, w, sf)
	return err
}

// IsFolderProblem reports whether err is a problem of the files themselves,
// which the pipeline fails the item for without retrying.
func IsFolderProblem(err error) bool {
	var ie *inputError
	var gp *group.Problem
	return errors.As(err, &ie) || errors.As(err, &gp)
}

// joinFiles records files, the group's files as seen now, on the image id
// that has not reached its item yet (a file added to a folder whose record
// is pending, say): the image is planned again with them (stepHash), so no
// file is left out. If the image reached its item in the meantime, the
// group is submitted again and becomes a new record.
func (p *Pipeline) joinFiles(ctx context.Context, g Group, id uint64, files []state.File) error {
	joined := false
	_, err := p.store.Update(id, func(r *state.Image) error {
		if beforeItem(r) {
			r.Joined, joined = files, true
		}
		return nil
	})
	if err != nil {
		p.stop(err)
		return fmt.Errorf("submit %s: %w", g.Key, err)
	}
	if !joined {
		return p.Submit(ctx, g)
	}
	p.log.Info("files of a recorded image changed before it reached its item; planning it again", "id", id, "key", g.Key, "files", len(files))
	p.enqueue(id, time.Time{})
	return nil
}

// joinedFile returns a file of the image's group seen after it was
// planned (state.Image.Joined), read from the state file, or "" when none
// is: the image must be planned again before it reaches its item.
func (ul *uploader) joinedFile(img *state.Image) (string, error) {
	cur, err := ul.store.Get(img.ID)
	if err != nil {
		return "", &storeError{err}
	}
	if len(cur.Joined) == 0 {
		return "", nil
	}
	for _, f := range cur.Joined {
		if !slices.ContainsFunc(img.Files, func(g state.File) bool { return g.Rel == f.Rel }) {
			return f.Path, nil
		}
	}
	return cur.Joined[0].Path, nil
}
