package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"

	"github.com/gcingest/gcingest/gcapi"
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

// relinkOptions are the flags of `gcingest relink`.
type relinkOptions struct {
	Archive  string
	From, To string
	Items    []string // item pks; empty: every item of the archive
	DryRun   bool
}

func (c *cli) cmdRelink(ctx context.Context, args []string) error {
	fs := newFlagSet("relink")
	cfgPath := configFlag(fs)
	var opts relinkOptions
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
	return relink(ctx, client, opts, c.stdout, log)
}

// relinkAPI is what relink needs from the Grand Challenge client.
type relinkAPI interface {
	ArchiveBySlug(ctx context.Context, slug string) (*gcapi.Archive, error)
	InterfaceBySlug(ctx context.Context, slug string) (*gcapi.Interface, error)
	ArchiveItems(ctx context.Context, archivePK string) ([]gcapi.ArchiveItem, error)
	ArchiveItem(ctx context.Context, pk string) (*gcapi.ArchiveItem, error)
	UpdateArchiveItem(ctx context.Context, pk string, values []gcapi.ValueUpdate) (*gcapi.ArchiveItem, error)
}

// relinkStep is what relink does with one item.
type relinkStep struct {
	item   gcapi.ArchiveItem
	image  string // the image's api_url under --from
	action string // "attach", or why not
}

func relink(ctx context.Context, api relinkAPI, opts relinkOptions, w io.Writer, log *slog.Logger) error {
	ar, err := api.ArchiveBySlug(ctx, opts.Archive)
	if err != nil {
		return fmt.Errorf("relink: archive %q: %w", opts.Archive, err)
	}
	for _, slug := range []string{opts.From, opts.To} {
		it, err := api.InterfaceBySlug(ctx, slug)
		if err != nil {
			return fmt.Errorf("relink: interface %q: %w", slug, err)
		}
		if it.SuperKind != gcapi.SuperKindImage {
			return &usageError{cmd: "relink", msg: fmt.Sprintf("interface %q is a %q interface (%s); relink moves images between image interfaces", slug, it.Kind, it.SuperKind)}
		}
	}
	var items []gcapi.ArchiveItem
	if len(opts.Items) == 0 {
		if items, err = api.ArchiveItems(ctx, ar.PK); err != nil {
			return fmt.Errorf("relink: list the items of %q: %w", opts.Archive, err)
		}
	} else {
		for _, pk := range opts.Items {
			it, err := api.ArchiveItem(ctx, pk)
			if err != nil {
				return fmt.Errorf("relink: item %s: %w", pk, err)
			}
			if it.Archive != ar.APIURL {
				return fmt.Errorf("relink: item %s is not in archive %q", pk, opts.Archive)
			}
			items = append(items, *it)
		}
	}
	steps := make([]relinkStep, 0, len(items))
	todo := 0
	for _, it := range items {
		st := planRelink(it, opts.From, opts.To)
		if st.action == "attach" {
			todo++
		}
		steps = append(steps, st)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ITEM\tTITLE\tIMAGE\tACTION")
	for _, st := range steps {
		act := st.action
		if act == "attach" {
			act = fmt.Sprintf("attach under %s", opts.To)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", st.item.PK, orDash(st.item.Title), orDash(lastSegment(st.image)), act)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d of %d items to change in %q: %s → %s (the image stays under %s too)\n",
		todo, len(items), opts.Archive, opts.From, opts.To, opts.From)
	if opts.DryRun || todo == 0 {
		return nil
	}
	failed := 0
	for _, st := range steps {
		if st.action != "attach" {
			continue
		}
		if err := attachAgain(ctx, api, st, opts.To); err != nil {
			failed++
			fmt.Fprintf(w, "FAIL  %s: %v\n", st.item.PK, err)
			log.Error("relink failed", "item", st.item.PK, "err", err)
			continue
		}
		fmt.Fprintf(w, "ok    %s: %s under %s\n", st.item.PK, lastSegment(st.image), opts.To)
	}
	if failed > 0 {
		return fmt.Errorf("relink: %d of %d items failed; run the same command again to retry them", failed, todo)
	}
	return nil
}

// planRelink decides what to do with one item.
func planRelink(it gcapi.ArchiveItem, from, to string) relinkStep {
	st := relinkStep{item: it}
	fv := it.Value(from)
	if fv == nil || fv.Image == nil || *fv.Image == "" {
		st.action = "skip: no image under " + from
		return st
	}
	st.image = *fv.Image
	switch tv := it.Value(to); {
	case tv == nil || tv.Image == nil || *tv.Image == "":
		st.action = "attach"
	case *tv.Image == st.image:
		st.action = "done already"
	default:
		st.action = "skip: " + to + " holds another image (" + lastSegment(*tv.Image) + ")"
	}
	return st
}

// attachAgain PATCHes the item with the image under the new socket. After
// an ambiguous failure it looks at the item instead of sending it again.
func attachAgain(ctx context.Context, api relinkAPI, st relinkStep, to string) error {
	_, err := api.UpdateArchiveItem(ctx, st.item.PK, []gcapi.ValueUpdate{{Interface: to, Image: st.image}})
	if err == nil || !errors.Is(err, gcapi.ErrAmbiguous) {
		return err
	}
	it, gerr := api.ArchiveItem(ctx, st.item.PK)
	if gerr != nil {
		return fmt.Errorf("%w (and reading the item back failed: %v)", err, gerr)
	}
	if v := it.Value(to); v != nil && v.Image != nil && *v.Image == st.image {
		return nil
	}
	return err
}

// lastSegment is the pk at the end of an api_url.
func lastSegment(u string) string {
	for len(u) > 0 && u[len(u)-1] == '/' {
		u = u[:len(u)-1]
	}
	for i := len(u) - 1; i >= 0; i-- {
		if u[i] == '/' {
			return u[i+1:]
		}
	}
	return u
}
