package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/demo"
)

const helpDemo = `Shows the whole flow in under a minute, with no account and no network:
starts the built-in fake Grand Challenge server on 127.0.0.1, writes sample
images of each kind (MetaIO .mha, an .mhd with its .raw, NIfTI, TIFF, a
DICOM series) into a temporary drop folder, runs the agent on it with live
progress, and prints the archive items that resulted. Everything it
created is removed at the end.

With --serve it only runs the fake server, on --listen, until Ctrl-C, and
prints its URL, token, archive and sockets: rehearse the install, the
config, check, status and monitoring before a real token exists.
`

func (c *cli) cmdDemo(ctx context.Context, args []string) error {
	fs := newFlagSet("demo")
	keep := fs.Bool("keep", false, "keep the temporary folder (drop folder, config, state file) for a look afterwards")
	serve := fs.Bool("serve", false, "only run the fake server, until Ctrl-C, to rehearse an install against it")
	listen := fs.String("listen", "127.0.0.1:8000", "with --serve: the fake server's address")
	pos, err := c.parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &usageError{cmd: "demo", msg: "demo takes no arguments"}
	}
	if *serve {
		return demo.Serve(ctx, demo.ServeOptions{Addr: *listen, Out: c.stdout})
	}
	dir, err := os.MkdirTemp("", "gcingest-demo-")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if *keep {
		defer fmt.Fprintf(c.stdout, "\nkept %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	return runDemo(ctx, dir, c.stdout, c.stderr)
}

// runDemo runs the demo in dir (empty, removed by the caller).
func runDemo(ctx context.Context, dir string, stdout, stderr io.Writer) error {
	return demo.Run(ctx, demo.Options{Dir: dir, Out: stdout, Version: versionString(),
		NewLogger: func(cfg *config.Config, token string) *slog.Logger { return newLogger(cfg, stderr, token) }})
}
