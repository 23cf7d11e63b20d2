package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/watch"
)

func TestExampleParsesAndValidates(t *testing.T) {
	c, err := Load(filepath.Join("..", "config.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if got, want := c.GrandChallenge.URL, d.GrandChallenge.URL; got != want {
		t.Errorf("url = %q, want %q", got, want)
	}
	if got, want := c.Upload, d.Upload; got != want {
		t.Errorf("upload = %+v, want the defaults %+v", got, want)
	}
	if got, want := c.Status, d.Status; got != want {
		t.Errorf("status = %+v, want %+v", got, want)
	}
	if got, want := c.State, d.State; got != want {
		t.Errorf("state = %+v, want %+v", got, want)
	}
	if len(c.Watch) != 2 {
		t.Fatalf("got %d watches, want 2", len(c.Watch))
	}
	w := c.Watch[0]
	// The example documents the watch defaults: they must equal what an
	// omitted key gets.
	if w.Group != DefaultGroup || time.Duration(w.Settle) != DefaultSettle || time.Duration(w.Rescan) != DefaultRescan ||
		w.AfterUpload != DefaultAfterUpload || w.Title != "" ||
		time.Duration(w.DICOMSettle) != DefaultDICOMSettle || w.Deidentify {
		t.Errorf("watch[0] = %+v, want the documented defaults", w)
	}
	if got, want := c.Watch[1].Values["*.pdf"], "report"; got != want {
		t.Errorf("watch[1] values[*.pdf] = %q, want %q", got, want)
	}
	if got, want := time.Duration(c.Watch[0].Settle), 30*time.Second; got != want {
		t.Errorf("watch[0].settle = %v, want %v", got, want)
	}
}

const minimal = `
[state]
path = "/var/lib/gcingest/state.db"
[[watch]]
path = "/data/in"
archive = "a"
interface = "ct-image"
`

func TestDefaultsApplied(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal), "minimal.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	w := c.Watch[0]
	if w.Group != "auto" || time.Duration(w.Settle) != 30*time.Second || time.Duration(w.Rescan) != time.Minute || w.AfterUpload != "keep" || w.Title != "" {
		t.Errorf("defaults not applied: %+v", w)
	}
	if time.Duration(w.DICOMSettle) != time.Minute || w.Deidentify {
		t.Errorf("dicom_settle = %v, deidentify = %v; want 1m0s and false by default", time.Duration(w.DICOMSettle), w.Deidentify)
	}
	if got, want := c.PartSizeBytes(), int64(32<<20); got != want {
		t.Errorf("part size = %d, want %d", got, want)
	}
}

func TestUnknownKeyNamesKeyAndLine(t *testing.T) {
	src := minimal + "setle = \"10s\"\n"
	_, err := Parse(strings.NewReader(src), "typo.toml")
	if err == nil {
		t.Fatal("no error for a typo")
	}
	for _, want := range []string{"typo.toml", `"watch.setle"`, "line 8"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestSyntaxErrorNamesLine(t *testing.T) {
	_, err := Parse(strings.NewReader("[state]\npath = \n"), "bad.toml")
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("got %v, want an error naming line 2", err)
	}
}

func TestBadDurationNamesKey(t *testing.T) {
	second := minimal + "\n[[watch]]\npath = \"/data/in2\"\narchive = \"a\"\ninterface = \"i\"\n"
	tests := []struct {
		name, src, want string
	}{
		{"words", minimal + "settle = \"30 seconds\"\n", `line 8: watch[0].settle: "30 seconds" is not a duration`},
		// A number would decode as nanoseconds: "settle = 30" is a typo.
		{"number", minimal + "rescan = 30\n", `watch[0].rescan: "30" is not a duration`},
		{"second watch", second + "dicom_settle = \"1\"\n", `line 13: watch[1].dicom_settle: "1" is not a duration`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.src), "d.toml")
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), `"30s"`) {
				t.Errorf("got %v, want an error with %q and the fix", err, tt.want)
			}
		})
	}
}

func TestValidateNamesKeyAndFix(t *testing.T) {
	tests := []struct {
		name, extra, key, fix string
	}{
		{"relative watch path", `path = "data/in"`, "watch[0].path", "absolute"},
		{"unknown group", `group = "series"`, "watch[0].group", "auto, file or folder"},
		{"move without done_dir", `after_upload = "move"`, "watch[0].done_dir", "absolute path"},
		{"unknown after_upload", `after_upload = "archive"`, "watch[0].after_upload", "keep, move or delete"},
		{"done_dir inside watch", "after_upload = \"move\"\ndone_dir = \"/data/in/done\"", "watch[0].done_dir", "beside the drop folder"},
		{"values without folder mode", "[watch.values]\n\"*.pdf\" = \"report\"", "watch[0].values", `group = "folder"`},
		{"title without hash or path", `title = "{name}"`, "watch[0].title", "{path} or {hash}"},
		{"bad title placeholder", `title = "{hash} {date}"`, "watch[0].title", "{path}"},
		{"bad exclude", `exclude = ["[x"]`, "watch[0].exclude", "shell patterns"},
		// Exports name folders after the patient: a de-identified
		// image's title may not carry them.
		{"deidentify with the path in the title", "deidentify = true\ntitle = \"{path} [{hash}]\"", "watch[0].title", `"{hash}"`},
		{"deidentify with the name in the title", "deidentify = true\ntitle = \"{name} {hash}\"", "watch[0].title", `"{hash}"`},
		// In file mode DICOM is not grouped as a series, so it would
		// leave as it is.
		{"incomplete_wait shorter than settle", `incomplete_wait = "1s"`, "watch[0].incomplete_wait", "longer than settle"},
		{"deidentify in file mode", "deidentify = true\ngroup = \"file\"", "watch[0].deidentify", "group = auto"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(minimal, `path = "/data/in"`, "", 1) + "\n" + tt.extra + "\n"
			if !strings.Contains(tt.extra, "path =") {
				src += "path = \"/data/in\"\n"
			}
			// [watch.values] must come last in TOML; move plain keys before it.
			if strings.HasPrefix(tt.extra, "[") {
				src = strings.Replace(minimal, "", "", 1) + tt.extra + "\n"
			}
			c, err := Parse(strings.NewReader(src), "t.toml")
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("got %v, want a *FieldError", err)
			}
			if !strings.Contains(err.Error(), tt.key+":") || !strings.Contains(err.Error(), tt.fix) {
				t.Errorf("got %q, want key %s and fix %q", err, tt.key, tt.fix)
			}
		})
	}
}

func TestValidateTopLevel(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		key  string
	}{
		{"relative state path", func(c *Config) { c.State.Path = "state.db" }, "state.path"},
		{"relative token file", func(c *Config) { c.GrandChallenge.TokenFile = "token" }, "grand_challenge.token_file"},
		{"http non-loopback", func(c *Config) { c.GrandChallenge.URL = "http://gc.example.org" }, "grand_challenge.url"},
		{"not a url", func(c *Config) { c.GrandChallenge.URL = "grand-challenge.org" }, "grand_challenge.url"},
		{"status not loopback", func(c *Config) { c.Status.Listen = "0.0.0.0:9187" }, "status.listen"},
		{"part size too small", func(c *Config) { c.Upload.PartSize = "1MiB" }, "upload.part_size"},
		{"bad rate", func(c *Config) { c.Upload.MaxRate = "fast" }, "upload.max_rate"},
		{"zero concurrency", func(c *Config) { c.Upload.Concurrency = 0 }, "upload.concurrency"},
		{"log level", func(c *Config) { c.Log.Level = "verbose" }, "log.level"},
		{"no watch", func(c *Config) { c.Watch = nil }, "watch"},
		{"nested watches", func(c *Config) {
			c.Watch = append(c.Watch, c.Watch[0])
			c.Watch[1].Path = "/data/in/sub"
		}, "watch[1].path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader(minimal), "t.toml")
			if err != nil {
				t.Fatal(err)
			}
			tt.mod(c)
			err = c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.key+":") {
				t.Errorf("got %v, want an error for %s", err, tt.key)
			}
		})
	}
}

func TestInsecureHTTP(t *testing.T) {
	c, _ := Parse(strings.NewReader(minimal), "t.toml")
	c.GrandChallenge.URL = "http://gc.example.org"
	c.GrandChallenge.InsecureHTTP = true
	if err := c.Validate(); err != nil {
		t.Fatalf("insecure_http = true still refused: %v", err)
	}
	if ws := c.Warnings(); len(ws) != 1 || !strings.Contains(ws[0], "unencrypted") {
		t.Errorf("warnings = %q, want one about plain http", ws)
	}
	c.GrandChallenge.URL = "http://127.0.0.1:8000"
	c.GrandChallenge.InsecureHTTP = false
	if err := c.Validate(); err != nil {
		t.Errorf("loopback http refused: %v", err)
	}
}

func TestTokenPrecedence(t *testing.T) {
	dir := t.TempDir()
	tf := filepath.Join(dir, "token")
	if err := os.WriteFile(tf, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := Parse(strings.NewReader(minimal), "t.toml")
	c.GrandChallenge.TokenFile = tf
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	check := func(want string) {
		t.Helper()
		got, _, err := c.Token(getenv)
		if err != nil || got != want {
			t.Errorf("Token() = %q, %v; want %q", got, err, want)
		}
	}
	check("from-file")
	c.GrandChallenge.Token = "from-config"
	check("from-config")
	env["GRAND_CHALLENGE_AUTHORIZATION"] = "Bearer from-gcapi-env"
	check("from-gcapi-env")
	env["GRAND_CHALLENGE_TOKEN"] = "from-env"
	check("from-env")

	c2, _ := Parse(strings.NewReader(minimal), "t.toml")
	if _, _, err := c2.Token(func(string) string { return "" }); !errors.Is(err, ErrNoToken) {
		t.Errorf("no token: got %v, want ErrNoToken", err)
	}
}

func TestWarnsOnReadableFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.toml")
	src := strings.Replace(minimal, "[state]", "[grand_challenge]\ntoken = \"secret\"\n[state]", 1)
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	ws := c.Warnings()
	if runtime.GOOS == "windows" {
		// No Unix modes there (Go reports 0666 for any writable file):
		// no warning at all, rather than one on every file.
		if len(ws) != 0 {
			t.Errorf("warnings on Windows = %q, want none", ws)
		}
		return
	}
	if len(ws) != 1 || !strings.Contains(ws[0], "chmod 600") {
		t.Errorf("warnings = %q, want one telling to chmod 600", ws)
	}
	for _, w := range ws {
		if strings.Contains(w, "secret") {
			t.Errorf("warning shows the token: %q", w)
		}
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if ws := c.Warnings(); len(ws) != 0 {
		t.Errorf("warnings for a 0600 file: %q", ws)
	}
	// The packaged layout, root:gcingest 0640: the service reads it
	// through its group and cannot change it. Only root can make a file
	// root's; as another user, a 0640 file of one's own warns.
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	ws = c.Warnings()
	switch {
	case runtime.GOOS == "windows":
	case os.Geteuid() == 0 && len(ws) != 0:
		t.Errorf("warnings for a root-owned 0640 file: %q", ws)
	case os.Geteuid() != 0 && len(ws) != 1:
		t.Errorf("warnings for a 0640 file of a user's own = %q, want one", ws)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if ws := c.Warnings(); len(ws) != 1 {
			t.Errorf("warnings for a 0640 file owned by another user than root = %q, want one", ws)
		}
	}
	for _, m := range []os.FileMode{0o620, 0o604} {
		if err := os.Chmod(p, m); err != nil {
			t.Fatal(err)
		}
		if ws := c.Warnings(); runtime.GOOS != "windows" && len(ws) != 1 {
			t.Errorf("warnings for mode %04o (others read, or the group writes) = %q, want one", m, ws)
		}
	}
}

func TestParseSizeAndRate(t *testing.T) {
	for in, want := range map[string]int64{"32MiB": 32 << 20, "5MB": 5e6, "1024": 1024, "1.5GiB": 3 << 29, "64k": 64 << 10} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, want := range map[string]int64{"": 0, "20MB/s": 20e6, "1MiB/s": 1 << 20} {
		if got, err := ParseRate(in); err != nil || got != want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"20MB", "fast/s", "10XB/s"} {
		if _, err := ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) accepted", in)
		}
	}
}

func TestMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v, want an error wrapping ErrNotExist", err)
	}
}

func TestDICOMKeys(t *testing.T) {
	for _, tt := range []struct {
		name, extra, wantErr string
	}{
		{"set", "dicom_settle = \"2m\"\ndeidentify = true\n", ""},
		{"negative settle", "dicom_settle = \"-1s\"\n", "watch[0].dicom_settle"},
		{"folder mode", "group = \"folder\"\ndeidentify = true\n", "watch[0].deidentify"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader(minimal+tt.extra), "d.toml")
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if w := c.Watch[0]; time.Duration(w.DICOMSettle) != 2*time.Minute || !w.Deidentify {
					t.Errorf("got dicom_settle %v, deidentify %v", time.Duration(w.DICOMSettle), w.Deidentify)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got %v, want an error naming %s", err, tt.wantErr)
			}
		})
	}
}

// A watch with a long settle time and no incomplete_wait is valid: the
// grouper's default wait grows with settle.
func TestLongSettleWithoutIncompleteWait(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal+"settle = \"2h\"\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("settle = 2h without incomplete_wait: %v; want valid", err)
	}
}

// TestExampleListsEveryWatchKey: the unknown-key error sends the user to
// config.example.toml for the keys, so each of watch.Spec's must be there.
func TestExampleListsEveryWatchKey(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "config.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	typ := reflect.TypeFor[watch.Spec]()
	for i := range typ.NumField() {
		key, _, _ := strings.Cut(typ.Field(i).Tag.Get("toml"), ",")
		if key == "" || key == "-" {
			t.Errorf("watch.Spec.%s has no toml tag: it is no key of a [[watch]] table", typ.Field(i).Name)
			continue
		}
		re := regexp.MustCompile(`(?m)^#?\s*` + regexp.QuoteMeta(key) + `\s*=|^#?\s*\[watch\.` + regexp.QuoteMeta(key) + `\]`)
		if !re.Match(b) {
			t.Errorf("config.example.toml does not show the [[watch]] key %s", key)
		}
	}
}
