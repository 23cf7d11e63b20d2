package main

import (
	"context"
	"fmt"
	"runtime/debug"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
// It is a package variable because -X can only set those.
var version string

// versionString is the version set at build time, else the module version
// from the build info (go install …@v1.2.3), else "devel".
func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

func (c *cli) cmdVersion(ctx context.Context, args []string) error {
	fs := newFlagSet("version")
	pos, err := c.parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &usageError{cmd: "version", msg: "version takes no arguments"}
	}
	_, err = fmt.Fprintln(c.stdout, "gcingest", versionString())
	return err
}
