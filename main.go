// Command gcingest watches drop folders and uploads every complete medical
// image to a Grand Challenge archive exactly once.
//
// main only wires: it parses the command line, loads the config, starts the
// parts and maps the one error that comes back to an exit code (exit.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// cli is what every command gets: where to write, and the environment.
// Tests give their own.
type cli struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	defaultConfig  string // the platform's config path; empty in tests: no default
	tokenSource    string // where the token came from, once a command read it
}

// command is one subcommand.
type command struct {
	name     string
	synopsis string // after "gcingest <name>"
	summary  string // one line for the command list
	help     string // the long text of --help
	run      func(c *cli, ctx context.Context, args []string) error
}

func commands() []command {
	return []command{
		{"run", "[--config FILE]", "run the agent in the foreground (also what the service runs)", helpRun, (*cli).cmdRun},
		{"check", "[--config FILE] [--echo]", "check the config, the token, archives, interfaces and folders; creates nothing", helpCheck, (*cli).cmdCheck},
		{"plan", "[--config FILE]", "dry run: how the drop folders would be grouped, what is ready, what waits", helpPlan, (*cli).cmdPlan},
		{"status", "[--config FILE] [--all | --state S] [--json] [ID]", "images in progress or failed, with counts; one image's whole story", helpStatus, (*cli).cmdStatus},
		{"retry", "[--config FILE] (ID... | --failed | --drop ID...)", "send failed images through the pipeline again", helpRetry, (*cli).cmdRetry},
		{"forget", "[--config FILE] ID...", "dismiss failed images for good: no longer counted as failed, their story kept", helpForget, (*cli).cmdForget},
		{"service", "install|uninstall|start|stop|restart|status [--config FILE]", "manage the system service", helpService, (*cli).cmdService},
		{"pull", "[--config FILE] --archive SLUG --out DIR [--interface SLUG]...", "download an archive's images; resumable", helpPull, (*cli).cmdPull},
		{"relink", "[--config FILE] --archive SLUG --from SOCKET --to SOCKET [--item PK]... [--dry-run]", "attach an archive's images under another image interface too; no re-upload", helpRelink, (*cli).cmdRelink},
		{"archives", "[--config FILE]", "the archives this token can see, with their slugs, for writing the config", helpArchives, (*cli).cmdArchives},
		{"interfaces", "[--config FILE] [--archive SLUG]", "the interfaces (sockets) with their slugs and kinds; those an archive uses", helpInterfaces, (*cli).cmdInterfaces},
		{"demo", "[--keep] | --serve [--listen ADDR]", "the whole flow against a built-in fake server; no account needed", helpDemo, (*cli).cmdDemo},
		{"version", "", "print the version", "Prints the version of this binary.\n", (*cli).cmdVersion},
	}
}

// run is the whole program minus the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := &cli{stdout: stdout, stderr: stderr, getenv: os.Getenv, defaultConfig: defaultConfigPath(os.Getenv)}
	return c.dispatch(ctx, args)
}

func (c *cli) dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 {
		c.usage(c.stderr)
		return &usageError{msg: "no command given"}
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help", "help":
		if len(rest) > 0 {
			if cmd, ok := findCommand(rest[0]); ok {
				return cmd.run(c, ctx, []string{"--help"})
			}
		}
		c.usage(c.stdout)
		return nil
	case "--version", "-version":
		name = "version"
	}
	cmd, ok := findCommand(name)
	if !ok {
		return &usageError{msg: fmt.Sprintf("unknown command %q", name), hint: "run 'gcingest help' for the list of commands"}
	}
	return c.withTokenSource(cmd.run(c, ctx, rest))
}

func findCommand(name string) (command, bool) {
	for _, cmd := range commands() {
		if cmd.name == name {
			return cmd, true
		}
	}
	return command{}, false
}

func (c *cli) usage(w io.Writer) {
	fmt.Fprint(w, "gcingest watches drop folders and uploads every complete medical image to a\n"+
		"Grand Challenge archive, exactly once.\n\nUsage:\n\n  gcingest <command> [arguments]\n\nCommands:\n\n")
	for _, cmd := range commands() {
		fmt.Fprintf(w, "  %-11s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprintf(w, "\nThe config file: --config FILE, else $%s, else %s.\n", configEnv, defaultConfigPath(os.Getenv))
	fmt.Fprint(w, "Run 'gcingest <command> --help' for a command's flags.\n"+
		"Exit codes: 0 ok, 1 runtime error, 2 usage or config error, 3 authentication failed,\n"+
		"4 another gcingest holds the state file.\n")
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses args into fs, allowing flags before, between and after
// positional arguments ("service install --config F" and "retry --config F
// 12 13" both work). It returns the positional arguments. --help prints the
// command's help with its flags and returns errHelp.
func (c *cli) parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				cmd, _ := findCommand(fs.Name())
				fmt.Fprintf(c.stdout, "Usage: %s\n\n%s", strings.TrimSpace("gcingest "+cmd.name+" "+cmd.synopsis), cmd.help)
				writeFlags(c.stdout, fs)
				return nil, errHelp
			}
			return nil, &usageError{cmd: fs.Name(), msg: err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func writeFlags(w io.Writer, fs *flag.FlagSet) {
	var lines []string
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		l := "  --" + f.Name
		if name != "" {
			l += " " + name
		}
		lines = append(lines, fmt.Sprintf("%-22s %s", l, usage))
	})
	if len(lines) == 0 {
		return
	}
	sort.Strings(lines)
	fmt.Fprintf(w, "\nFlags:\n%s\n", strings.Join(lines, "\n"))
}

// errHelp means --help was shown: exit 0.
var errHelp = errors.New("help shown")

// configFlag registers the --config flag every command but demo and version has.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", "", configUsage())
}
