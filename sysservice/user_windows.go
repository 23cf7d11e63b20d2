//go:build windows

package sysservice

import (
	"errors"
	"io"
	"os/user"

	"github.com/gcingest/gcingest/config"
)

// On Windows the service runs as LocalSystem (packaging/README.md); there
// is no service user to create.

func ensureServiceUser(io.Writer, string) (*user.User, error) {
	return nil, errors.New("no service user on Windows")
}

func prepareServiceFiles(io.Writer, *config.Config, *user.User) error { return nil }
