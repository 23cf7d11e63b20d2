// Package demo is `gcingest demo`: the whole flow in under a minute against
// the built-in fake Grand Challenge server (gcapitest), with no account and
// no network.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/gcingest/gcingest/agent"
	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/status"
)

const (
	demoArchive   = "demo-archive"
	demoInterface = "generic-medical-image"
	demoTimeout   = 60 * time.Second
)

// Options configure Run.
type Options struct {
	// Dir is an empty folder for the drop folder, the config and the state
	// file; the caller removes it.
	Dir string
	// Out gets the progress lines and the archive's items at the end.
	Out io.Writer
	// NewLogger builds the agent's logger from the demo's config, scrubbing
	// token.
	NewLogger func(cfg *config.Config, token string) *slog.Logger
	// Version names this binary to the fake server and in the status report.
	Version string
}

// Run starts the fake server, writes one sample image of each kind into a
// drop folder under opts.Dir, runs the agent on it until every image is in
// an archive item (or demoTimeout passes), and prints those items.
func Run(ctx context.Context, opts Options) error {
	dir, stdout := opts.Dir, opts.Out
	srv := gcapitest.NewServer(gcapitest.Options{Seed: 1, Logger: slog.New(slog.DiscardHandler)})
	defer srv.Close()
	srv.AddArchive(demoArchive, "Demo archive")
	srv.AddInterface(demoInterface, "Image")
	fmt.Fprintf(stdout, "fake Grand Challenge at %s: archive %q, interface %q\n", srv.URL, demoArchive, demoInterface)

	drop := filepath.Join(dir, "drop")
	names, err := writeSamples(drop)
	if err != nil {
		return fmt.Errorf("demo: write samples: %w", err)
	}
	fmt.Fprintf(stdout, "dropped %d images into %s:\n", len(names), drop)
	for _, n := range names {
		fmt.Fprintf(stdout, "  %s\n", n)
	}

	listen, err := freeLoopbackPort()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	cfgPath := filepath.Join(dir, "config.toml")
	toml := fmt.Sprintf(`# written by gcingest demo
[grand_challenge]
url = %q
token = %q
[state]
path = %q
[status]
listen = %q
[log]
level = "warn"
[[watch]]
path = %q
archive = %q
interface = %q
settle = "1s"
dicom_settle = "1s"
rescan = "2s"
`, srv.URL, srv.Token(), filepath.Join(dir, "state.db"), listen, drop, demoArchive, demoInterface)
	if err := os.WriteFile(cfgPath, []byte(toml), 0o600); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	fmt.Fprintf(stdout, "config %s (settle 1s, rescan 2s)\n\nrunning the agent:\n", cfgPath)

	// The fake's token, whatever GRAND_CHALLENGE_TOKEN says: a real token
	// would be refused by the fake (and has no business there).
	a, err := agent.New(agent.Options{Config: cfg, Token: srv.Token(), Logger: opts.NewLogger(cfg, srv.Token()), Version: opts.Version})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	var agentErr error
	agentDone := make(chan struct{})
	go func() {
		defer close(agentDone)
		agentErr = a.Run(actx)
	}()

	err = watchDemo(ctx, srv, listen, len(names), stdout, agentDone)
	cancel()
	<-agentDone
	if agentErr != nil && !errors.Is(agentErr, context.Canceled) {
		err = agentErr // the cause, rather than "stopped early"
	}
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	printItems(stdout, srv)
	return nil
}

// watchDemo prints progress lines until want images sit in archive items,
// the agent fails, or the demo times out.
func watchDemo(ctx context.Context, srv *gcapitest.Server, listen string, want int, w io.Writer, agentDone <-chan struct{}) error {
	start := time.Now()
	deadline := time.NewTimer(demoTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := map[string]string{}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-agentDone:
			return errors.New("agent stopped early")
		case <-deadline.C:
			return fmt.Errorf("not every image arrived within %s; the fake server holds %d of %d", demoTimeout, imagesIn(srv), want)
		case <-tick.C:
		}
		settled := true // every image the agent knows has reached the end of its road
		if rep, err := status.Fetch(ctx, listen, status.Query{All: true}); err == nil {
			for _, im := range rep.Images {
				line := im.State
				if im.State == status.StateUploading && im.BytesTotal > 0 {
					line = fmt.Sprintf("%s %d%%", im.State, im.BytesSent*100/im.BytesTotal)
				}
				if im.LastError != "" {
					line += " (" + im.LastError + ")"
				}
				if last[im.ID] != line {
					last[im.ID] = line
					fmt.Fprintf(w, "  %5.1fs  %-32s %s\n", time.Since(start).Seconds(), demoName(im), line)
				}
				switch im.State {
				case status.StateFinished, status.StateFailed, status.StateDuplicate:
				default:
					settled = false
				}
			}
		}
		if settled && imagesIn(srv) >= want {
			fmt.Fprintf(w, "  %5.1fs  all %d images are in the archive\n", time.Since(start).Seconds(), want)
			return nil
		}
	}
}

// demoName is how an image is shown in the progress lines: its title once
// known, else its key, with a DICOM series named by its folder rather than
// its UIDs.
func demoName(im status.Image) string {
	if i := strings.LastIndex(im.Title, " ["); i > 0 {
		return im.Title[:i]
	}
	if strings.HasPrefix(im.Key, "dicom:") && len(im.Files) > 0 {
		return path.Dir(im.Files[0]) + " (DICOM)"
	}
	return im.Key
}

// imagesIn counts the demo archive's items that hold an image.
func imagesIn(srv *gcapitest.Server) int {
	n := 0
	for _, it := range srv.Items(demoArchive) {
		if v := it.Value(demoInterface); v != nil && v.Image != nil {
			n++
		}
	}
	return n
}

func printItems(w io.Writer, srv *gcapitest.Server) {
	names := map[string]string{}
	for _, im := range srv.Images() {
		names[im.APIURL] = im.Name
	}
	items := srv.Items(demoArchive)
	sort.Slice(items, func(i, j int) bool { return items[i].Title < items[j].Title })
	fmt.Fprintf(w, "\narchive %q now holds %d items:\n", demoArchive, len(items))
	for _, it := range items {
		fmt.Fprintf(w, "  %s\n    pk %s\n", it.Title, it.PK)
		for _, v := range it.Values {
			fmt.Fprintf(w, "    %s: %s\n", v.Interface.Slug, describeValue(v, names))
		}
	}
}

func describeValue(v gcapitest.ItemValue, imageNames map[string]string) string {
	switch {
	case v.Image != nil:
		if n := imageNames[*v.Image]; n != "" {
			return "image " + n
		}
		return "image " + *v.Image
	case v.File != nil:
		return "file " + *v.File
	}
	return strings.TrimSpace(string(v.Value))
}

// writeSamples writes one image of each kind into drop, each file written
// beside and renamed in, so the agent never sees half a file.
func writeSamples(drop string) ([]string, error) {
	hdr, raw := gcapitest.SampleMHDPair(2, 16, 16, 4, "brain.raw")
	files := map[string][]byte{
		"ct-scan.mha":     gcapitest.SampleMHA(1, 16, 16, 8),
		"mri/brain.mhd":   hdr,
		"mri/brain.raw":   raw,
		"pet.nii":         gcapitest.SampleNIfTI(3, 16, 16, 4),
		"slides/tile.tif": gcapitest.SampleTIFF(4, 32, 32),
	}
	for name, b := range gcapitest.SampleDICOMSeries(4) {
		files["dicom/series1/"+name] = b
	}
	for rel, b := range files {
		p := filepath.Join(drop, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		tmp := filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".tmp")
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, p); err != nil {
			return nil, err
		}
	}
	return []string{"ct-scan.mha (MetaIO)", "mri/brain.mhd + brain.raw (MetaIO header and data)",
		"pet.nii (NIfTI)", "slides/tile.tif (TIFF)", "dicom/series1/ (a DICOM series of 4 files)"}, nil
}

// freeLoopbackPort picks a port for the demo's status listener.
func freeLoopbackPort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, nil
}
