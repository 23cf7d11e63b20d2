package main

import (
	"context"
	"log/slog"

	"github.com/gcingest/gcingest/check"
)

const helpCheck = `Checks the config, then the server and the folders, and prints one line
per check ("ok", "WARN" or "FAIL"):

  - the config parses and every key is valid; config and token files are
    not readable by others
  - the token works (the first archive is found with it)
  - each archive exists and this account may add items to it (proved with
    a create the server must refuse for its values alone)
  - the status port is free ([status] listen), as run needs it
  - each interface exists and fits: an image interface for the watch's
    images; for [watch.values], an image interface for image files and a
    file or value interface for others
  - each drop folder exists and is readable; done_dir and failed_dir exist,
    are writable and are on the same file system as the drop folder
  - with group = "folder", every folder item ready now passes every rule
    run applies to it (values.json, item.txt, [watch.values], the kind of
    each interface, one file per file interface, JSON values of the right
    type): the same code as run

It creates nothing on the server. Exit code 0 when every check passed,
1 when one failed, 3 when the server refused the token.
`

func (c *cli) cmdCheck(ctx context.Context, args []string) error {
	fs := newFlagSet("check")
	cfgPath := configFlag(fs)
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
	return check.Run(ctx, check.Options{Config: cfg, Getenv: c.getenv, Out: c.stdout, Version: versionString(),
		Logger: func(tok string) *slog.Logger { return newLogger(cfg, c.stderr, tok) }})
}
