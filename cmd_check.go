package main

import (
	"context"
	"log/slog"

	"github.com/gcingest/gcingest/check"
)

const helpCheck = `Checks the config with run's own start-up, changing nothing, and prints
one line per check ("ok", "WARN" or "FAIL"). A FAIL is what makes run
refuse to start, a WARN what run starts with and logs, in the same words:

  - the config parses and every key is valid; config and token files are
    not readable by others
  - the token works (the first archive is found with it)
  - each drop folder exists, is readable and writable (a probe file is
    made and removed); done_dir and failed_dir are writable, or can be
    made, and are on the same file system as the drop folder
  - no other gcingest watches a drop folder (its .gcingest.lock); the
    running agent of this config (this host, this state file) is fine
  - the status port is free ([status] listen), or held by the running
    gcingest that answers there
  - each [[dicom]] listener's TLS certificate and key load, and its port
    is free, or held by the running gcingest of this config
  - each archive exists and this account may add items to it (proved with
    a create the server must refuse for its values alone)
  - each interface exists and fits: an image interface for the watch's
    images; for [watch.values], an image interface for image files and a
    file or value interface for others
  - with group = "folder", every folder item ready now passes every rule
    run applies to it (values.json, item.txt, [watch.values], the kind of
    each interface, one file per file interface, JSON values of the right
    type): the same code as run

With --echo it then sends a C-ECHO to each [[dicom]] listener of the
running agent, as a scanner would (over TLS where configured), calling as
the first AE title of the allow list that admits this host, and prints ok
or the refusal.

It creates nothing on the server, nor the state file. Exit code 0 when no
check failed, 1 when one did, 3 when the server refused the token.
`

func (c *cli) cmdCheck(ctx context.Context, args []string) error {
	fs := newFlagSet("check")
	cfgPath := configFlag(fs)
	echo := fs.Bool("echo", false, "then send a C-ECHO to each [[dicom]] listener of the running agent")
	pos, err := c.parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &usageError{cmd: "check", msg: "check takes no arguments"}
	}
	cfg, err := c.loadConfig("check", *cfgPath)
	if err != nil {
		return err
	}
	return check.Run(ctx, check.Options{Config: cfg, Getenv: c.getenv, Out: c.stdout, Version: versionString(), Echo: *echo,
		Logger: func(tok string) *slog.Logger { return newLogger(cfg, c.stderr, tok) }})
}
