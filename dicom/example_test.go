package dicom_test

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/gcingest/gcingest/dicom"
)

// Rewrite one file of a group into a temporary file beside its target and
// rename it into place only when the rewrite succeeded. (Compiled, not run.)
func ExampleDeidentifier_Rewrite() {
	secret, err := os.ReadFile("/var/lib/gcingest/dicom-secret")
	if err != nil {
		fmt.Println(err)
		return
	}
	d, err := dicom.NewDeidentifier(secret)
	if err != nil {
		fmt.Println(err)
		return
	}
	// All files of one group get one series, so they stay one image.
	d = d.WithSeriesKey("1.2.3|1.2.3.4|" + dicom.CTImageStorage)

	src, err := os.Open("slice-001.dcm")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer src.Close()
	dst, err := os.CreateTemp("spool", ".deid-*")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.Remove(dst.Name())
	_, err = d.Rewrite(dst, src)
	var rejected *dicom.RejectError
	switch {
	case errors.As(err, &rejected):
		fmt.Println("not sent:", rejected.Justification)
		return
	case err != nil:
		fmt.Println(err)
		return
	}
	if err := dst.Sync(); err != nil {
		fmt.Println(err)
		return
	}
	dst.Close()
	fmt.Println(os.Rename(dst.Name(), "spool/slice-001.dcm"))
}

// The same UID under the same secret always gives the same new UID.
func ExampleDeidentifier_UID() {
	d, err := dicom.NewDeidentifier([]byte("an installation secret, 32 byte"))
	if err != nil {
		fmt.Println(err)
		return
	}
	a, b := d.UID("1.2.840.113619.2.55.3"), d.UID("1.2.840.113619.2.55.3")
	fmt.Println(a == b, strings.HasPrefix(a, "2.25."), len(a) <= 64)
	// Output: true true true
}
