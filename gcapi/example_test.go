package gcapi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

// This example is the upload-to-archive flow: upload the image's file,
// create (or find) the archive item by its title, attach the upload to the
// item's image socket, and wait until the server's import shows the image.
// It runs against the fake server; for a real one, pass
// "https://grand-challenge.org" and your API token to gcapi.New.
func Example() {
	srv := gcapitest.NewServer(gcapitest.Options{})
	defer srv.Close()
	srv.AddArchive("my-archive", "My archive")
	srv.AddInterface("ct-image", "Image")
	mha := gcapitest.SampleMHA(1, 16, 16, 8) // the bytes of a small .mha file

	ctx := context.Background()
	c, err := gcapi.New(srv.URL, srv.Token(), gcapi.WithUserAgent("example/1.0"))
	if err != nil {
		log.Fatal(err)
	}
	archive, err := c.ArchiveBySlug(ctx, "my-archive")
	if err != nil {
		log.Fatal(err)
	}

	// 1. Upload first, so a failed upload never leaves an empty item.
	//    Body is any io.ReaderAt, usually an *os.File.
	up, err := c.UploadFile(ctx, gcapi.FileUpload{
		Filename: "ct.mha",
		Body:     bytes.NewReader(mha),
		Size:     int64(len(mha)),
		OnCreated: func(u *gcapi.Upload) error {
			// Record u.PK and u.S3UploadID durably here to resume later.
			return nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}

	// 2. The title is the idempotency key: on a conflict, use the item
	//    that already has it.
	const title = "scanner1/ct.mha [3f9a1c2b7e4d]"
	item, err := c.CreateArchiveItem(ctx, archive.APIURL, title)
	if gcapi.IsTitleConflict(err) {
		item, err = c.ArchiveItemByTitle(ctx, archive.PK, title)
	}
	if err != nil || item == nil {
		log.Fatal(errors.Join(err, errors.New("no item")))
	}

	// 3. Attach the upload as the image of the item's socket.
	_, err = c.UpdateArchiveItem(ctx, item.PK, []gcapi.ValueUpdate{
		{Interface: "ct-image", UserUploads: []string{up.APIURL}},
	})
	if err != nil {
		log.Fatal(err)
	}

	// 4. The import runs in the background: poll the item until the value
	//    shows an image (a failed import shows up as a Failed upload
	//    session in c.UploadSessions).
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 10*time.Second) {
		it, err := c.ArchiveItem(ctx, item.PK)
		if err != nil {
			log.Fatal(err)
		}
		if v := it.Value("ct-image"); v != nil && v.Image != nil {
			img, err := c.Image(ctx, *v.Image)
			if err != nil {
				log.Fatal(err)
			}
			fmt.Printf("item %q holds image %s\n", it.Title, img.Name)
			break
		}
		time.Sleep(wait)
	}
	// Output: item "scanner1/ct.mha [3f9a1c2b7e4d]" holds image ct.mha
}
