package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/gcingest/gcingest/pull"
)

const helpPull = `Downloads the images (and file values) of an archive's items into DIR, one
folder per item, named by its title. A DICOM image set becomes a folder of
<SOPInstanceUID>.dcm files, named after its interface once it is whole
(until then it is <interface>.part). Resumable: files already complete in
DIR are not fetched again. --interface limits it to the given interface
slugs (repeat the flag for several). The config needs no [[watch]], only
[grand_challenge] (or GRAND_CHALLENGE_TOKEN) and [log].
`

// pullOptions are the flags of `gcingest pull`.
type pullOptions struct {
	Archive    string   // archive slug
	Out        string   // absolute output folder
	Interfaces []string // interface slugs to fetch; empty: all
}

// stringList is a flag that may be repeated.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func (c *cli) cmdPull(ctx context.Context, args []string) error {
	fs := newFlagSet("pull")
	cfgPath := configFlag(fs)
	var opts pullOptions
	fs.StringVar(&opts.Archive, "archive", "", "the archive `SLUG` to download")
	fs.StringVar(&opts.Out, "out", "", "the folder `DIR` to download into")
	var ifaces stringList
	fs.Var(&ifaces, "interface", "only this interface `SLUG` (repeatable)")
	pos, err := c.parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &usageError{cmd: "pull", msg: "pull takes no arguments"}
	}
	if opts.Archive == "" || opts.Out == "" {
		return &usageError{cmd: "pull", msg: "pull needs --archive SLUG and --out DIR"}
	}
	// A path typed at the shell may be relative to it; the config's may not.
	if opts.Out, err = filepath.Abs(opts.Out); err != nil {
		return err
	}
	opts.Interfaces = ifaces
	client, log, err := c.serverClient("pull", *cfgPath)
	if err != nil {
		return err
	}
	res, err := pull.Pull(ctx, client, pull.Options{
		Archive:    opts.Archive,
		Out:        opts.Out,
		Interfaces: opts.Interfaces,
		Progress:   c.stderr,
	}, log)
	if err != nil && res == (pull.Result{}) {
		// It stopped before it had an archive to count: a summary of
		// zeros would read like an empty archive.
		return err
	}
	fmt.Fprintln(c.stdout, res)
	return err
}
