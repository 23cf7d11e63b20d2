package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/gcingest/gcingest/agent"
	"github.com/gcingest/gcingest/gcapi"
)

const helpArchives = `Lists the archives this token can see, with the slug that goes into a
[[watch]] table (archive = "SLUG"). Seeing an archive is not the right to
upload to it: the account must be an editor or uploader of the archive;
'gcingest check' tells. Needs no [[watch]] in the config, only
[grand_challenge] (or GRAND_CHALLENGE_TOKEN).
`

const helpInterfaces = `Lists the interfaces (sockets) with the slug and kind for writing the
config: a [[watch]] interface must be an image interface (super kind
Image); [watch.values] patterns name image, file or value interfaces.

Without --archive, every interface on the server (there are many). With
--archive SLUG, the interfaces the archive's items already use, with how
many items hold each: usually what a new item wants too. An archive linked
to a challenge phase accepts only that phase's inputs.
`

func (c *cli) cmdArchives(ctx context.Context, args []string) error {
	fs := newFlagSet("archives")
	cfgPath := configFlag(fs)
	pos, err := c.parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &usageError{cmd: "archives", msg: "archives takes no arguments"}
	}
	cl, _, err := c.serverClient("archives", *cfgPath)
	if err != nil {
		return err
	}
	all, err := cl.Archives(ctx)
	if err != nil {
		return err
	}
	if len(all) == 0 {
		fmt.Fprintf(c.stdout, "this token sees no archive on %s; ask an archive's editors to add the account as an uploader\n", cl.BaseURL())
		return nil
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Slug < all[j].Slug })
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLUG\tTITLE\tURL")
	for _, a := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", orDash(a.Slug), oneLine(a.Title), a.URL)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "\n%s; use the slug as archive = \"SLUG\" in a [[watch]]\n", plural(len(all), "archive", "archives"))
	return nil
}

func (c *cli) cmdInterfaces(ctx context.Context, args []string) error {
	fs := newFlagSet("interfaces")
	cfgPath := configFlag(fs)
	archive := fs.String("archive", "", "only the interfaces the items of archive `SLUG` use")
	pos, err := c.parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &usageError{cmd: "interfaces", msg: "interfaces takes no arguments"}
	}
	cl, _, err := c.serverClient("interfaces", *cfgPath)
	if err != nil {
		return err
	}
	if *archive == "" {
		all, err := cl.Interfaces(ctx)
		if err != nil {
			return err
		}
		return writeInterfaces(c.stdout, all, nil)
	}
	a, err := cl.ArchiveBySlug(ctx, *archive)
	if err != nil {
		return err
	}
	items, err := cl.ArchiveItems(ctx, a.PK)
	if err != nil {
		return fmt.Errorf("list the items of archive %q: %w", *archive, err)
	}
	ifaces, used := gcapi.InterfacesInUse(items)
	fmt.Fprintf(c.stdout, "archive %q (%s): %s\n\n", *archive, oneLine(a.Title), plural(len(items), "item", "items"))
	if len(ifaces) == 0 {
		fmt.Fprintf(c.stdout, "its items hold no values yet; 'gcingest interfaces' lists every interface (images: %q)\n", "generic-medical-image")
		return nil
	}
	return writeInterfaces(c.stdout, ifaces, used)
}

// writeInterfaces prints one line per interface, sorted by slug; with used
// non-nil, how many items hold each.
func writeInterfaces(w io.Writer, all []gcapi.Interface, used map[string]int) error {
	sort.Slice(all, func(i, j int) bool { return all[i].Slug < all[j].Slug })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "SLUG\tKIND\tSUPER KIND\tUSE AS"
	if used != nil {
		head += "\tITEMS"
	}
	fmt.Fprintln(tw, head)
	for _, it := range all {
		use := "[watch.values]"
		if it.SuperKind == gcapi.SuperKindImage {
			use = "interface, [watch.values]"
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%s", it.Slug, it.Kind, it.SuperKind, use)
		if used != nil {
			line += fmt.Sprintf("\t%d", used[it.Slug])
		}
		fmt.Fprintln(tw, line)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%s\n", plural(len(all), "interface", "interfaces"))
	return nil
}

// serverClient is the API client, and the logger, of a command that only
// talks to the server: the config needs no [[watch]].
func (c *cli) serverClient(cmd, cfgFlag string) (*gcapi.Client, *slog.Logger, error) {
	cfg, err := c.loadConfigWatches(cmd, cfgFlag, false)
	if err != nil {
		return nil, nil, err
	}
	tok, err := c.token(cfg)
	if err != nil {
		return nil, nil, err
	}
	log := newLogger(cfg, c.stderr, tok)
	cl, err := agent.NewClient(cfg, tok, versionString(), log)
	return cl, log, err
}

// oneLine keeps a server-provided title on one table row.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
