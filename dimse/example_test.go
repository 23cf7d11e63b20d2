package dimse_test

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"

	"github.com/gcingest/gcingest/dimse"
)

// A storage node that takes what the CT scanner CT1 and anything on the
// radiology network send to the AE title GCINGEST, and spools it into a
// folder that a watch uploads.
func Example() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	store, err := dimse.NewSpoolStore("/var/spool/gcingest/dicom", log)
	if err != nil {
		log.Error("spool", "err", err)
		return
	}
	srv, err := dimse.NewServer(dimse.Config{
		AETitle: "GCINGEST",
		Allow: []dimse.Caller{
			{AETitle: "CT1"},
			{Network: netip.MustParsePrefix("10.20.0.0/16")},
		},
		Store:  store,
		Logger: log,
	})
	if err != nil {
		log.Error("dicom listener", "err", err)
		return
	}
	ln, err := net.Listen("tcp", ":11112")
	if err != nil {
		log.Error("listen", "err", err)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := srv.Serve(ctx, ln); err != nil {
		log.Error("dicom listener", "err", err)
	}
}
