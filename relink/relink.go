// Package relink attaches the images of an archive's items, under one image
// interface (socket), under another as well: the same image on the server,
// nothing uploaded again (`gcingest relink`).
package relink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"

	"github.com/gcingest/gcingest/gcapi"
)

// Options say what to relink.
type Options struct {
	Archive  string   // the archive's slug
	From, To string   // image interface slugs: where the images are now, where to attach them too
	Items    []string // item pks; empty: every item of the archive
	DryRun   bool     // print the plan, change nothing
}

// KindError is a From or To that is not an image interface: relink moves
// images between image interfaces only.
type KindError struct {
	Slug, Kind string
	SuperKind  string
}

// Error says which interface is of which kind.
func (e *KindError) Error() string {
	return fmt.Sprintf("interface %q is a %q interface (%s); relink moves images between image interfaces", e.Slug, e.Kind, e.SuperKind)
}

// API is what relink needs from the Grand Challenge client (*gcapi.Client).
type API interface {
	ArchiveBySlug(ctx context.Context, slug string) (*gcapi.Archive, error)
	InterfaceBySlug(ctx context.Context, slug string) (*gcapi.Interface, error)
	ArchiveItems(ctx context.Context, archivePK string) ([]gcapi.ArchiveItem, error)
	ArchiveItem(ctx context.Context, pk string) (*gcapi.ArchiveItem, error)
	UpdateArchiveItem(ctx context.Context, pk string, values []gcapi.ValueUpdate) (*gcapi.ArchiveItem, error)
}

// step is what relink does with one item.
type step struct {
	item   gcapi.ArchiveItem
	image  string // the image's api_url under --from
	action string // "attach", or why not
}

// Run attaches the image of each item of opts.Archive (or of opts.Items)
// now under opts.From under opts.To as well, with one PATCH per item; the
// server keeps the value under From. It first writes to w what it will do,
// item by item, and stops there with opts.DryRun. An item whose To holds
// the same image already is skipped, so a stopped run can be started again;
// one whose To holds another image is left alone. A From or To that is not
// an image interface is a *KindError; an item that failed is logged and
// counted in the error returned at the end.
func Run(ctx context.Context, api API, opts Options, w io.Writer, log *slog.Logger) error {
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
			return &KindError{Slug: slug, Kind: it.Kind, SuperKind: it.SuperKind}
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
	steps := make([]step, 0, len(items))
	todo := 0
	for _, it := range items {
		st := plan(it, opts.From, opts.To)
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

// plan decides what to do with one item.
func plan(it gcapi.ArchiveItem, from, to string) step {
	st := step{item: it}
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
func attachAgain(ctx context.Context, api API, st step, to string) error {
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

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
