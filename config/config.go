// Package config reads, checks and converts the gcingest TOML configuration.
//
// The flow is Default → Parse (strict: an unknown key is an error naming it
// and its line) → Validate (errors name the key and the fix). Paths in the
// file must be absolute so that nothing depends on the working directory of
// whoever started the process (a shell, systemd, the Windows service
// manager).
package config

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/gcingest/gcingest/watch"
)

// Config is the whole configuration file.
type Config struct {
	GrandChallenge GrandChallenge `toml:"grand_challenge"`
	State          State          `toml:"state"`
	Upload         Upload         `toml:"upload"`
	Status         Status         `toml:"status"`
	Log            Log            `toml:"log"`
	Watch          []watch.Spec   `toml:"watch"` // the keys are watch.Spec's toml tags
	// DICOM lists the DICOM storage nodes (C-STORE SCP), each feeding the
	// [[watch]] of its spool folder.
	DICOM []DICOM `toml:"dicom"`

	// Path is the absolute path the config was loaded from; empty when it
	// was parsed from a reader. Not a key in the file.
	Path string `toml:"-"`
}

// GrandChallenge is the [grand_challenge] table.
type GrandChallenge struct {
	URL          string `toml:"url"`
	TokenFile    string `toml:"token_file"`
	Token        string `toml:"token"`
	InsecureHTTP bool   `toml:"insecure_http"`
	// CAFile is a PEM file of CA certificates trusted for the server's TLS
	// certificate besides the system's (a hospital's own CA, or a proxy
	// that inspects TLS).
	CAFile string `toml:"ca_file"`
}

// State is the [state] table.
type State struct {
	Path string `toml:"path"`
	// Keep is how long records of finished images are kept before they
	// are pruned (unless their files are still in a watched folder); 0
	// keeps them for ever.
	Keep Duration `toml:"keep"`
}

// Upload is the [upload] table.
type Upload struct {
	Concurrency     int    `toml:"concurrency"`
	PartConcurrency int    `toml:"part_concurrency"`
	PartSize        string `toml:"part_size"` // "32MiB"
	MaxRate         string `toml:"max_rate"`  // "20MB/s"; empty: no limit
}

// Status is the [status] table.
type Status struct {
	Listen string `toml:"listen"` // loopback host:port; empty: no listener
}

// Log is the [log] table.
type Log struct {
	Level  string `toml:"level"`  // debug | info | warn | error
	Format string `toml:"format"` // text | json
}

// Defaults of a [[watch]] table, applied to every key left out or zero.
const (
	DefaultGroup       = watch.GroupAuto
	DefaultSettle      = 30 * time.Second
	DefaultDICOMSettle = 60 * time.Second
	DefaultRescan      = time.Minute
	DefaultAfterUpload = watch.AfterUploadKeep
	DefaultPartSize    = "32MiB"
	DefaultListen      = "127.0.0.1:9187"
	DefaultURL         = "https://grand-challenge.org"
	DefaultStatePath   = "/var/lib/gcingest/state.db"
	DefaultKeep        = Duration(30 * 24 * time.Hour) // [state] keep
)

// Duration is a time.Duration written as a string in the file ("30s", "1m").
type Duration time.Duration

// UnmarshalText parses "30s", "1m30s" and the like.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration; write it like \"30s\" or \"1m\"", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as time.Duration.String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Default returns a Config holding every default; it has no watch.
func Default() *Config {
	return &Config{
		GrandChallenge: GrandChallenge{URL: DefaultURL},
		State:          State{Path: DefaultStatePath, Keep: DefaultKeep},
		Upload:         Upload{Concurrency: 4, PartConcurrency: 4, PartSize: DefaultPartSize},
		Status:         Status{Listen: DefaultListen},
		Log:            Log{Level: "info", Format: "text"},
	}
}

// Load reads and parses the file at path (made absolute) and validates it.
func Load(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	b, err := ReadFile(abs)
	if err != nil {
		return nil, err
	}
	c, err := Parse(bytes.NewReader(b), abs)
	if err != nil {
		return nil, err
	}
	c.Path = abs
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", abs, err)
	}
	return c, nil
}

// Parse decodes a config over the defaults. name is used in error messages.
// A key the config does not know is an error naming the key and its line.
// Parse does not validate; call Validate.
func Parse(r io.Reader, name string) (*Config, error) {
	src, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", name, err)
	}
	if err := checkWatchDurations(src); err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	c := Default()
	md, err := toml.NewDecoder(bytes.NewReader(src)).Decode(c)
	if err != nil {
		// The library's message says "toml: line N (last key "a.b"): …".
		return nil, fmt.Errorf("config %s: %s", name, strings.TrimPrefix(err.Error(), "toml: "))
	}
	if und := md.Undecoded(); len(und) > 0 {
		var errs []error
		for _, k := range und {
			msg := fmt.Sprintf("unknown key %q", k.String())
			if line := keyLine(src, k); line > 0 {
				msg = fmt.Sprintf("line %d: %s", line, msg)
			}
			errs = append(errs, fmt.Errorf("config %s: %s (a typo? config.example.toml lists every key)", name, msg))
		}
		return nil, errors.Join(errs...)
	}
	for i := range c.Watch {
		applyDefaults(&c.Watch[i])
	}
	return c, nil
}

func applyDefaults(w *watch.Spec) {
	if w.Group == "" {
		w.Group = DefaultGroup
	}
	if w.Settle == 0 {
		w.Settle = DefaultSettle
	}
	if w.DICOMSettle == 0 {
		w.DICOMSettle = DefaultDICOMSettle
	}
	// IncompleteWait stays 0 when unset: the grouper takes an hour, or
	// 4 × settle when that is longer (group.DefaultIncompleteWait).
	if w.Rescan == 0 {
		w.Rescan = DefaultRescan
	}
	if w.AfterUpload == "" {
		w.AfterUpload = DefaultAfterUpload
	}
	// Title stays empty when unset: the pipeline picks DefaultTitle, or
	// DeidTitle for an image it de-identifies (a DICOM Image Set socket is
	// known only from the server).
}

// checkWatchDurations reads every duration of every [[watch]] table as
// Duration does, before the decode into watch.Spec's time.Duration fields:
// the TOML library would take a number there for nanoseconds ("settle =
// 30" for 30ns) and word its own error. The duration keys are the toml tags
// of watch.Spec's time.Duration fields, so a new one needs no edit here.
func checkWatchDurations(src []byte) error {
	var raw struct {
		Watch []map[string]any `toml:"watch"`
	}
	if _, err := toml.NewDecoder(bytes.NewReader(src)).Decode(&raw); err != nil {
		return nil // the decode proper reports it
	}
	var keys []string
	t := reflect.TypeFor[watch.Spec]()
	for i := range t.NumField() {
		if f := t.Field(i); f.Type == reflect.TypeFor[time.Duration]() {
			keys = append(keys, strings.Split(f.Tag.Get("toml"), ",")[0])
		}
	}
	var errs []error
	for i, w := range raw.Watch {
		for _, k := range keys {
			v, ok := w[k]
			if !ok {
				continue
			}
			s, isString := v.(string)
			if !isString {
				s = fmt.Sprint(v)
			} else if _, err := time.ParseDuration(s); err == nil {
				continue
			}
			var err error = &FieldError{Key: fmt.Sprintf("watch[%d].%s", i, k), Msg: fmt.Sprintf("%q is not a duration", s), Fix: `write it like "30s" or "1m"`}
			if line := watchKeyLine(src, i, k); line > 0 {
				err = fmt.Errorf("line %d: %w", line, err)
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// watchKeyLine finds the line of key in the i-th [[watch]] table, when the
// tables are written with [[watch]] headers; 0 when not found.
func watchKeyLine(src []byte, i int, key string) int {
	header := regexp.MustCompile(`^\s*\[\[\s*watch\s*\]\]`)
	assign := regexp.MustCompile(`^\s*("?)` + regexp.QuoteMeta(key) + `("?)\s*=`)
	sc := bufio.NewScanner(bytes.NewReader(src))
	seen := -1
	for n := 1; sc.Scan(); n++ {
		switch line := sc.Text(); {
		case header.MatchString(line):
			seen++
		case strings.HasPrefix(strings.TrimSpace(line), "["):
			if seen == i {
				return 0 // a table after the watch's own keys
			}
		case seen == i && assign.MatchString(line):
			return n
		}
	}
	return 0
}

// keyLine finds the line that defines the last part of key k: an assignment
// "name =" or a table header "[name" / "[a.name". The TOML library keeps key
// positions to itself, so this is a best effort; 0 when not found.
func keyLine(src []byte, k toml.Key) int {
	if len(k) == 0 {
		return 0
	}
	last := regexp.QuoteMeta(k[len(k)-1])
	assign := regexp.MustCompile(`^\s*("?)` + last + `("?)\s*=`)
	header := regexp.MustCompile(`^\s*\[\[?\s*([^\]]*\.)?"?` + last + `"?\s*\]`)
	sc := bufio.NewScanner(bytes.NewReader(src))
	for n := 1; sc.Scan(); n++ {
		if assign.MatchString(sc.Text()) || header.MatchString(sc.Text()) {
			return n
		}
	}
	return 0
}

// FieldError is a problem with one key: which key, what is wrong and how to
// fix it.
type FieldError struct {
	Key string // e.g. "watch[0].settle"
	Msg string // what is wrong
	Fix string // what to do; may be empty
}

func (e *FieldError) Error() string {
	if e.Fix == "" {
		return e.Key + ": " + e.Msg
	}
	return e.Key + ": " + e.Msg + "; " + e.Fix
}

// Validate checks every key and returns all problems found, each a
// *FieldError (joined).
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, msg, fix string) { errs = append(errs, &FieldError{Key: key, Msg: msg, Fix: fix}) }
	abs := func(key, p string, required bool) {
		switch {
		case p == "" && required:
			bad(key, "missing", "set an absolute path")
		case p != "" && !filepath.IsAbs(p):
			bad(key, fmt.Sprintf("%q is a relative path", p), "write it as an absolute path; paths never depend on the working directory")
		}
	}

	gc := c.GrandChallenge
	// The URL is shown without user info: "https://user:TOKEN@host" is a
	// mistake this check exists to catch, and must not print the token.
	shownURL := redactURL(gc.URL)
	if u, err := url.Parse(gc.URL); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		bad("grand_challenge.url", fmt.Sprintf("%q is not an http(s) URL", shownURL), `write it like "https://grand-challenge.org"`)
	} else if u.User != nil {
		bad("grand_challenge.url", fmt.Sprintf("%q holds a user name or password", shownURL), "remove it from the URL; put the API token in token_file, token or GRAND_CHALLENGE_TOKEN")
	} else if u.Scheme == "http" && !IsLoopbackHost(u.Hostname()) && !gc.InsecureHTTP {
		bad("grand_challenge.url", fmt.Sprintf("%q would send the token unencrypted", shownURL), "use https://, or set insecure_http = true if this network is trusted")
	}
	abs("grand_challenge.token_file", gc.TokenFile, false)
	abs("grand_challenge.ca_file", gc.CAFile, false)
	if gc.CAFile != "" && filepath.IsAbs(gc.CAFile) {
		if _, err := readCAFile(gc.CAFile); err != nil {
			bad("grand_challenge.ca_file", err.Error(), "name a PEM file holding the CA certificate(s) that signed the server's certificate")
		}
	}
	abs("state.path", c.State.Path, true)
	if c.State.Keep < 0 {
		bad("state.keep", "is negative", `write it like "720h" (30 days), or "0s" to keep every record`)
	}

	u := c.Upload
	if u.Concurrency < 1 || u.Concurrency > 64 {
		bad("upload.concurrency", fmt.Sprintf("%d is out of range", u.Concurrency), "use 1 to 64")
	}
	if u.PartConcurrency < 1 || u.PartConcurrency > 64 {
		bad("upload.part_concurrency", fmt.Sprintf("%d is out of range", u.PartConcurrency), "use 1 to 64")
	}
	if n, err := ParseSize(u.PartSize); err != nil {
		bad("upload.part_size", err.Error(), `write it like "32MiB"`)
	} else if n < 5<<20 || n > 5<<30 {
		bad("upload.part_size", fmt.Sprintf("%q is out of range", u.PartSize), `S3 takes parts of 5MiB to 5GiB; "32MiB" is a good size`)
	}
	if _, err := ParseRate(u.MaxRate); err != nil {
		bad("upload.max_rate", err.Error(), `write it like "20MB/s", or "" for no limit`)
	}

	if l := c.Status.Listen; l != "" {
		host, port, err := net.SplitHostPort(l)
		if err != nil || port == "" {
			bad("status.listen", fmt.Sprintf("%q is not host:port", l), `write it like "127.0.0.1:9187", or "" for no listener`)
		} else if !IsLoopbackHost(host) {
			bad("status.listen", fmt.Sprintf("%q is not a loopback address", l), "the status endpoint shows file names: listen on 127.0.0.1 or [::1] only")
		}
	}
	if !oneOf(c.Log.Level, "debug", "info", "warn", "error") {
		bad("log.level", fmt.Sprintf("%q is not a level", c.Log.Level), "use debug, info, warn or error")
	}
	if !oneOf(c.Log.Format, "text", "json") {
		bad("log.format", fmt.Sprintf("%q is not a format", c.Log.Format), "use text or json")
	}

	if len(c.Watch) == 0 {
		bad("watch", "no [[watch]] table", "add one [[watch]] with path, archive and interface for each drop folder")
	}
	for i, w := range c.Watch {
		key := func(k string) string { return fmt.Sprintf("watch[%d].%s", i, k) }
		abs(key("path"), w.Path, true)
		if w.Archive == "" {
			bad(key("archive"), "missing", "set the archive's slug (the last part of its URL)")
		}
		if w.Interface == "" {
			bad(key("interface"), "missing", `set the slug of an image interface, e.g. "generic-medical-image"`)
		}
		if !w.Group.Valid() {
			bad(key("group"), fmt.Sprintf("%q is not a grouping", w.Group), "use auto, file or folder")
		}
		if w.Settle < 0 {
			bad(key("settle"), "is negative", `write it like "30s"`)
		}
		if w.DICOMSettle < 0 {
			bad(key("dicom_settle"), "is negative", `write it like "60s"`)
		}
		if w.IncompleteWait < 0 || (w.IncompleteWait > 0 && w.IncompleteWait < w.Settle) {
			bad(key("incomplete_wait"), fmt.Sprintf("%s is shorter than settle", w.IncompleteWait), `make it longer than settle; "1h" is the default`)
		}
		if w.Deidentify && (w.Group == watch.GroupFolder || w.Group == watch.GroupFile) {
			// Only a series grouped as DICOM is de-identified: in these
			// modes its files would leave as they are.
			bad(key("deidentify"), "is not supported in "+string(w.Group)+" mode", "use group = auto for DICOM to de-identify")
		}
		if w.Rescan < time.Second {
			bad(key("rescan"), fmt.Sprintf("%s is too short", w.Rescan), `use at least "1s"; "1m" is usual`)
		}
		for _, p := range w.Exclude {
			if _, err := filepath.Match(p, ""); err != nil {
				bad(key("exclude"), fmt.Sprintf("%q is not a valid pattern", p), "use shell patterns such as \"*.bak\"")
			}
		}
		if !w.AfterUpload.Valid() {
			bad(key("after_upload"), fmt.Sprintf("%q is not an action", w.AfterUpload), "use keep, move or delete")
		}
		abs(key("done_dir"), w.DoneDir, w.AfterUpload == watch.AfterUploadMove)
		abs(key("failed_dir"), w.FailedDir, false)
		for _, d := range []struct{ k, p string }{{"done_dir", w.DoneDir}, {"failed_dir", w.FailedDir}} {
			if d.p != "" && w.Path != "" && within(w.Path, d.p) {
				bad(key(d.k), fmt.Sprintf("%q is inside the watched folder", d.p), "put it beside the drop folder, or its files would be picked up again")
			}
		}
		if w.AfterUpload != watch.AfterUploadMove && w.DoneDir != "" {
			bad(key("done_dir"), "set but after_upload is not \"move\"", `set after_upload = "move" or remove done_dir`)
		}
		if len(w.Values) > 0 && w.Group != watch.GroupFolder {
			bad(key("values"), "only used when group = \"folder\"", `set group = "folder" or remove [watch.values]`)
		}
		for p, slug := range w.Values {
			if _, err := filepath.Match(p, ""); err != nil {
				bad(key("values"), fmt.Sprintf("%q is not a valid pattern", p), "use shell patterns such as \"*.pdf\"")
			}
			if slug == "" {
				bad(key("values"), fmt.Sprintf("pattern %q has no interface", p), "name the interface slug its files go to")
			}
		}
		if err := checkTitle(w.Title); w.Title != "" && err != nil {
			bad(key("title"), err.Error(), `use {path}, {name} and {hash}, with {path} or {hash} in it, e.g. "{path} [{hash}]"`)
		}
		if w.Deidentify && (strings.Contains(w.Title, "{path}") || strings.Contains(w.Title, "{name}")) {
			bad(key("title"), fmt.Sprintf("%q sends folder and file names, which often hold the patient's name or ID, although deidentify = true", w.Title),
				`use "{hash}" (keyed with the de-identification secret) and fixed text, or leave title unset`)
		}
		for j := 0; j < i; j++ {
			o := c.Watch[j].Path
			if o != "" && w.Path != "" && (within(o, w.Path) || within(w.Path, o)) {
				bad(key("path"), fmt.Sprintf("%q overlaps watch[%d].path %q", w.Path, j, o), "give each watch its own folder, not one inside another")
			}
		}
	}
	c.validateDICOM(bad)
	return errors.Join(errs...)
}

var placeholder = regexp.MustCompile(`\{[^}]*\}`)

// checkTitle makes sure a title template can only name known placeholders
// and tells images apart: {name} alone would give two images the same
// title, and the title is what finds an item again after a crash.
func checkTitle(t string) error {
	for _, p := range placeholder.FindAllString(t, -1) {
		if !oneOf(p, "{path}", "{name}", "{hash}") {
			return fmt.Errorf("%q has an unknown placeholder %s", t, p)
		}
	}
	if !strings.Contains(t, "{path}") && !strings.Contains(t, "{hash}") {
		return fmt.Errorf("%q does not tell images apart", t)
	}
	return nil
}

// within reports whether p is root or inside it.
func within(root, p string) bool {
	rel, err := filepath.Rel(filepath.Clean(root), filepath.Clean(p))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

func oneOf(s string, set ...string) bool {
	for _, v := range set {
		if s == v {
			return true
		}
	}
	return false
}

// IsLoopbackHost reports whether host (no port) is a loopback name or address.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// Warnings lists what is allowed but unwise: a config or token file that
// others can read or that group or others can change, or that its group
// can read unless root owns it, a token sent over plain http. Validate
// first.
//
// Root owning the file and the service's group reading it (root:gcingest
// 0640, as the packages install it) is the safe layout for a service: the
// agent reads its token but cannot rewrite its own url to send the token
// elsewhere.
func (c *Config) Warnings() []string {
	var ws []string
	perm := func(what, p string) {
		if p == "" {
			return
		}
		fi, err := os.Stat(p)
		if err != nil {
			return
		}
		if exposed(fi) {
			ws = append(ws, fmt.Sprintf("%s %s can be read or changed by group or others (mode %04o); run: chmod 600 %s "+
				"(for a service: chown root:gcingest and chmod 640)", what, p, fi.Mode().Perm(), p))
		}
	}
	if c.GrandChallenge.Token != "" {
		perm("config file holding a token,", c.Path)
	} else {
		perm("config file", c.Path)
	}
	perm("token file", c.GrandChallenge.TokenFile)
	if u, err := url.Parse(c.GrandChallenge.URL); err == nil && u.Scheme == "http" && !IsLoopbackHost(u.Hostname()) {
		ws = append(ws, fmt.Sprintf("grand_challenge.url %s is plain http: the token travels unencrypted (insecure_http = true)", redactURL(c.GrandChallenge.URL)))
	}
	for i, d := range c.DICOM {
		if len(d.Allow) == 0 {
			ws = append(ws, fmt.Sprintf("dicom[%d].allow is empty: the listener on %s refuses every caller (and logs each); "+
				`list the scanners and PACS that may send, e.g. allow = [{ae = "CT1", from = "10.0.0.0/24"}]`, i, d.Listen))
		}
		if w := c.SpoolWatch(d); d.AcceptUnknownClasses && w >= 0 && c.Watch[w].Deidentify {
			ws = append(ws, fmt.Sprintf("dicom[%d].accept_unknown_classes = true, but watch[%d] de-identifies: the procedure has rules for known SOP classes only, "+
				"so an instance of an unknown class is received, then its image fails and nothing of it is sent; "+
				"turn one of them off", i, w))
		}
	}
	return ws
}

// ErrNoToken is returned by Token when no source holds a token.
var ErrNoToken = errors.New("no API token: set GRAND_CHALLENGE_TOKEN, or grand_challenge.token_file, or grand_challenge.token")

// Token returns the API token and where it came from. Precedence: the
// environment variable GRAND_CHALLENGE_TOKEN, then GRAND_CHALLENGE_AUTHORIZATION
// (gcapi's), then grand_challenge.token, then grand_challenge.token_file.
// getenv is os.Getenv in production. A "Bearer " prefix is dropped, as gcapi
// does: only the last word counts.
func (c *Config) Token(getenv func(string) string) (token, source string, err error) {
	for _, env := range []string{"GRAND_CHALLENGE_TOKEN", "GRAND_CHALLENGE_AUTHORIZATION"} {
		if v := lastWord(getenv(env)); v != "" {
			return v, "environment variable " + env, nil
		}
	}
	if v := lastWord(c.GrandChallenge.Token); v != "" {
		return v, "grand_challenge.token", nil
	}
	if p := c.GrandChallenge.TokenFile; p != "" {
		b, err := readSmallFile(p, maxTokenFile)
		if err != nil {
			return "", "", fmt.Errorf("grand_challenge.token_file: %w", err)
		}
		if v := lastWord(string(b)); v != "" {
			return v, "grand_challenge.token_file " + p, nil
		}
		return "", "", fmt.Errorf("grand_challenge.token_file %s is empty; put the API token in it", p)
	}
	return "", "", ErrNoToken
}

// maxTokenFile bounds a token file: a token is 64 characters.
const maxTokenFile = 64 << 10

// maxConfigFile bounds a config file; a real one is a few KiB.
const maxConfigFile = 1 << 20

// ReadFile reads a config file: a regular file of at most 1 MiB, so that
// --config /dev/zero or a FIFO is refused instead of filling memory or
// hanging.
func ReadFile(path string) ([]byte, error) {
	b, err := readSmallFile(path, maxConfigFile)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return b, nil
}

// maxCAFile bounds a CA file: a bundle of every public CA is about 200 KiB.
const maxCAFile = 4 << 20

// readSmallFile reads a regular file of at most max bytes. Anything else
// (a device such as /dev/zero, a FIFO, a directory, a huge file) is refused
// with a message that says so, without reading it: a FIFO would block the
// open and the read for ever, a device would fill memory. The file is
// opened non-blocking and checked again on the open handle, in case it was
// swapped between the stat and the open.
func readSmallFile(p string, max int64) ([]byte, error) {
	check := func(fi os.FileInfo) error {
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file (%s); name a plain file", p, fileKind(fi.Mode()))
		}
		if fi.Size() > max {
			return fmt.Errorf("%s is %d bytes, more than the %d KiB allowed; is it the right file?", p, fi.Size(), max>>10)
		}
		return nil
	}
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if err := check(fi); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, err
	}
	if err := check(fi); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s grew past the %d KiB allowed while being read", p, max>>10)
	}
	return b, nil
}

func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return "mode " + m.String()
}

// readCAFile reads the certificates of a PEM file; a file without any
// certificate is an error.
func readCAFile(p string) ([]*x509.Certificate, error) {
	b, err := readSmallFile(p, maxCAFile)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", p, len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate (-----BEGIN CERTIFICATE-----)", p)
	}
	return certs, nil
}

// RootCAs returns the CAs to trust for the server's TLS certificate: nil
// (the system's, which SSL_CERT_FILE and SSL_CERT_DIR can change on Linux)
// when grand_challenge.ca_file is not set, else the system's plus those in
// the file.
func (c *Config) RootCAs() (*x509.CertPool, error) {
	p := c.GrandChallenge.CAFile
	if p == "" {
		return nil, nil
	}
	certs, err := readCAFile(p)
	if err != nil {
		return nil, fmt.Errorf("grand_challenge.ca_file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool() // no system roots here: the file's alone
	}
	for _, cert := range certs {
		pool.AddCert(cert)
	}
	return pool, nil
}

// redactURL drops user info from a URL for messages, also from one that
// does not parse.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		u.User = nil
		return u.String()
	}
	if i := strings.Index(raw, "://"); i >= 0 {
		auth := raw[i+3:]
		if j := strings.IndexAny(auth, "/?#"); j >= 0 {
			auth = auth[:j]
		}
		if at := strings.LastIndexByte(auth, '@'); at >= 0 {
			return raw[:i+3] + raw[i+3+at+1:]
		}
	}
	return raw
}

func lastWord(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return f[len(f)-1]
}

// PartSizeBytes returns upload.part_size in bytes. Validate first.
func (c *Config) PartSizeBytes() int64 {
	n, _ := ParseSize(c.Upload.PartSize)
	return n
}

// MaxRateBytes returns upload.max_rate in bytes per second, 0 for no limit.
// Validate first.
func (c *Config) MaxRateBytes() int64 {
	n, _ := ParseRate(c.Upload.MaxRate)
	return n
}

var sizeRE = regexp.MustCompile(`^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$`)

var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
	"k": 1 << 10, "m": 1 << 20, "g": 1 << 30,
}

// ParseSize parses "32MiB", "5MB", "1048576" into bytes. KB/MB/GB are powers
// of 1000, KiB/MiB/GiB (and K/M/G) powers of 1024.
func ParseSize(s string) (int64, error) {
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	unit, ok := sizeUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, fmt.Errorf("%q has an unknown unit %q", s, m[2])
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	return int64(v * unit), nil
}

// ParseRate parses "20MB/s" into bytes per second; "" is 0 (no limit).
func ParseRate(s string) (int64, error) {
	if strings.TrimSpace(s) == "" {
		return 0, nil
	}
	t := strings.TrimSpace(s)
	if !strings.HasSuffix(t, "/s") {
		return 0, fmt.Errorf("%q is not a rate per second", s)
	}
	n, err := ParseSize(strings.TrimSuffix(t, "/s"))
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a rate", s)
	}
	return n, nil
}
