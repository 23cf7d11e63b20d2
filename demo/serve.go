package demo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

// ServeOptions configure Serve.
type ServeOptions struct {
	Addr string    // the fake's API address, "127.0.0.1:8000" say
	Out  io.Writer // where the URL, token, archives and interfaces are printed
	Log  *slog.Logger
}

// Sockets the rehearsal server offers, by slug: one of each kind a watch
// can name (an image, an overlay, a PDF report, a JSON value, a DICOM
// image set).
var serveSockets = []struct{ slug, kind string }{
	{demoInterface, "Image"},
	{"generic-overlay", "Segmentation"},
	{"report", "PDF file"},
	{"lung-volume", "Float"},
	{"dicom-image-set", "DICOM Image Set"},
}

// Serve runs the built-in fake Grand Challenge on opts.Addr until ctx is
// done, with an archive and a socket of each kind, and prints what a
// config needs to use it, so that an install, a config, monitoring and
// alerts can be rehearsed before a real token exists. What it receives is
// kept in memory and a temporary folder, both gone when it stops.
func Serve(ctx context.Context, opts ServeOptions) error {
	// The fake panics on a listen failure (a test fixture's way); a busy
	// port given on the command line is an error to say instead.
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return fmt.Errorf("demo --serve: listen on %s: %w", opts.Addr, err)
	}
	addr := ln.Addr().String()
	ln.Close()
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srv := gcapitest.NewServer(gcapitest.Options{Addr: addr, Logger: log})
	defer srv.Close()
	srv.AddArchive(demoArchive, "Demo archive")
	for _, s := range serveSockets {
		srv.AddInterface(s.slug, s.kind)
	}
	w := opts.Out
	fmt.Fprintf(w, "fake Grand Challenge at %s (not the real server: nothing leaves this machine)\n", srv.URL)
	fmt.Fprintf(w, "token:    %s\n", srv.Token())
	fmt.Fprintf(w, "archive:  %s\n", demoArchive)
	for _, s := range serveSockets {
		fmt.Fprintf(w, "socket:   %-22s %s\n", s.slug, s.kind)
	}
	fmt.Fprintf(w, "\nin a config:\n\n[grand_challenge]\nurl = %q\ntoken = %q\n\n[[watch]]\npath = \"/path/to/a/drop/folder\"\narchive = %q\ninterface = %q\n\n",
		srv.URL, srv.Token(), demoArchive, demoInterface)
	fmt.Fprintln(w, "serving until Ctrl-C")
	<-ctx.Done()
	return nil
}
