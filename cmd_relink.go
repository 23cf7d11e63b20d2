package main

import (
	"context"
	"errors"

	"github.com/gcingest/gcingest/relink"
)

const helpRelink = `Attaches the images of an archive's items, now under the image interface
(socket) --from, under the image interface --to as well: the same image on
the server, nothing uploaded again. It is the tutorial's "changing the
interface type of uploaded images", for a whole archive (or the items
named with --item, repeatable).

It first prints what it will change, item by item; --dry-run stops there.
It is resumable: an item whose --to already holds the same image is
skipped, so a run that was stopped can simply be started again. An item
whose --to holds another image is left alone and reported.

The image also stays under --from: the change is a PATCH, and on a PATCH
the server keeps every value the request does not name (grand-challenge.org
app/grandchallenge/components/serializers.py, update: only a full PUT
removes the others). Remove the old values in the web interface if they
must go. The config needs no [[watch]]. Exit code 0 when every planned item
was changed, 1 when one failed.
`

func (c *cli) cmdRelink(ctx context.Context, args []string) error {
	fs := newFlagSet("relink")
	cfgPath := configFlag(fs)
	var opts relink.Options
	fs.StringVar(&opts.Archive, "archive", "", "the archive `SLUG`")
	fs.StringVar(&opts.From, "from", "", "the image interface `SLUG` the images are under now")
	fs.StringVar(&opts.To, "to", "", "the image interface `SLUG` to attach them under")
	var items stringList
	fs.Var(&items, "item", "only the item with this `PK` (repeatable)")
	fs.BoolVar(&opts.DryRun, "dry-run", false, "print what would change, change nothing")
	pos, err := c.parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &usageError{cmd: "relink", msg: "relink takes no arguments"}
	}
	if opts.Archive == "" || opts.From == "" || opts.To == "" {
		return &usageError{cmd: "relink", msg: "relink needs --archive SLUG, --from SOCKET and --to SOCKET"}
	}
	if opts.From == opts.To {
		return &usageError{cmd: "relink", msg: "--from and --to name the same interface"}
	}
	opts.Items = items
	client, log, err := c.serverClient("relink", *cfgPath)
	if err != nil {
		return err
	}
	err = relink.Run(ctx, client, opts, c.stdout, log)
	var ke *relink.KindError
	if errors.As(err, &ke) {
		return &usageError{cmd: "relink", msg: ke.Error()}
	}
	return err
}
