package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/gcingest/gcingest/agent"
	"github.com/gcingest/gcingest/check"
	"github.com/gcingest/gcingest/folderlock"
	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/state"
)

// Exit codes, documented in the README.
const (
	exitOK     = 0 // done
	exitError  = 1 // a runtime error: the server, the network, a file
	exitUsage  = 2 // the command line or the config is wrong
	exitAuth   = 3 // the server refused the token
	exitLocked = 4 // another gcingest holds the state file or a drop folder
)

// usageError is a mistake on the command line; hint says what to do.
type usageError struct {
	cmd  string // the command, for the default hint
	msg  string
	hint string
}

func (e *usageError) Error() string { return e.msg }

// configError is a config that cannot be used (missing, unreadable,
// invalid, no token).
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// exitCode prints err (if any) to stderr and maps it to the exit code. It
// is the one place that decides exit codes.
func exitCode(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, errHelp) {
		return exitOK
	}
	fmt.Fprintln(stderr, "gcingest:", err)
	var ue *usageError
	var ce *configError
	switch {
	case errors.As(err, &ue):
		hint := ue.hint
		if hint == "" && ue.cmd != "" {
			hint = fmt.Sprintf("run 'gcingest %s --help' for usage", ue.cmd)
		}
		if hint != "" {
			fmt.Fprintln(stderr, hint)
		}
		return exitUsage
	case errors.As(err, &ce), errors.As(err, new(*agent.ConfigError)):
		return exitUsage
	case errors.Is(err, gcapi.ErrUnauthorized), errors.Is(err, check.ErrTokenRefused):
		fmt.Fprintln(stderr, "check the token: the first of GRAND_CHALLENGE_TOKEN, GRAND_CHALLENGE_AUTHORIZATION, grand_challenge.token and token_file that is set is used (a new one at https://grand-challenge.org/settings/api-tokens/)")
		return exitAuth
	case errors.As(err, new(*folderlock.HeldError)):
		fmt.Fprintln(stderr, "stop the other gcingest, or remove this folder from one of the two configs")
		return exitLocked
	case errors.Is(err, state.ErrLocked):
		fmt.Fprintln(stderr, "stop the other gcingest (or the service: gcingest service stop) or use another state.path")
		return exitLocked
	}
	return exitError
}
