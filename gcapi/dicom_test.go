package gcapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

// dicomSetTarget is the fake with one item holding a DICOM image set of
// three single-frame instances and one of two frames.
func dicomSetTarget(t *testing.T) (*target, string) {
	t.Helper()
	tg := fakeTarget(t)
	tg.fake.AddInterface("dicom-set", "DICOM Image Set")
	item := tg.fake.AddItem(tg.archive, "dicom")
	files := gcapitest.SampleDICOMSeries(3)
	files["IM000004.dcm"] = gcapitest.SampleDICOMFrames(4, 2, 4, gcapitest.SampleStudyUID, gcapitest.SampleSeriesUID)
	pk, err := tg.fake.AddDICOMImageSetValue(item.PK, "dicom-set", "My series", files)
	if err != nil {
		t.Fatal(err)
	}
	return tg, pk
}

func TestDICOMInstances(t *testing.T) {
	tg, pk := dicomSetTarget(t)
	c := tg.client(t)
	ctx := context.Background()

	im, err := c.Image(ctx, pk)
	if err != nil {
		t.Fatal(err)
	}
	if im.DICOMImageSet == nil || im.DICOMImageSet.ImageSetID == "" || len(im.Files) != 0 {
		t.Fatalf("image = %+v, want a DICOM image set without files", im)
	}
	set, err := c.DICOMInstances(ctx, pk)
	if err != nil {
		t.Fatal(err)
	}
	if set.ImageSetID != im.DICOMImageSet.ImageSetID || len(set.Instances) != 5 {
		t.Fatalf("image set %q with %d instance entries, want %q with 5 (one per frame)",
			set.ImageSetID, len(set.Instances), im.DICOMImageSet.ImageSetID)
	}
	stored, err := tg.fake.DICOMInstances(pk)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	for _, in := range stored {
		want[in.SOPInstanceUID] = in.Content
	}
	for _, in := range set.Instances {
		var buf bytes.Buffer
		n, err := c.DownloadSigned(ctx, in.GetInstance, &buf)
		if err != nil {
			t.Fatalf("instance %s: %v", in.SOPInstanceUID, err)
		}
		if n != int64(buf.Len()) || !bytes.Equal(buf.Bytes(), want[in.SOPInstanceUID]) {
			t.Errorf("instance %s: %d bytes that differ from the %d stored", in.SOPInstanceUID, n, len(want[in.SOPInstanceUID]))
		}
	}
	for _, r := range tg.fake.Requests() {
		if strings.HasPrefix(r.Path, "/healthimaging/") && strings.Contains(r.Authorization, tg.token) {
			t.Errorf("%s %s carried the token", r.Method, r.Path)
		}
	}

	t.Run("an image without a set is a 404", func(t *testing.T) {
		item := tg.fake.AddItem(tg.archive, "mha")
		if err := tg.fake.AddImageValue(item.PK, tg.image, "ct.mha", gcapitest.SampleMHA(1, 2, 2, 2)); err != nil {
			t.Fatal(err)
		}
		it, err := c.ArchiveItem(ctx, item.PK)
		if err != nil {
			t.Fatal(err)
		}
		mha, err := c.Image(ctx, *it.Value(tg.image).Image)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.DICOMInstances(ctx, mha.PK); !gcapi.IsNotFound(err) {
			t.Errorf("DICOMInstances of an MHA image: %v, want a 404", err)
		}
		if _, err := c.DICOMInstances(ctx, "../uploads"); err == nil {
			t.Error("a pk that changes the path was sent")
		}
	})

	t.Run("an expired signature is a permanent 403", func(t *testing.T) {
		tg.fake.Advance(gcapitest.SignedRequestExpiry + time.Minute)
		_, err := c.DownloadSigned(ctx, set.Instances[0].GetInstance, io.Discard)
		var e *gcapi.Error
		if !errors.As(err, &e) || e.StatusCode != http.StatusForbidden || gcapi.IsTransient(err) {
			t.Fatalf("err = %v, want a permanent 403", err)
		}
		if strings.Contains(err.Error(), "imageSetId") {
			t.Errorf("error %q shows the signed URL's query", err)
		}
	})

	t.Run("transient answers are retried", func(t *testing.T) {
		fresh, err := c.DICOMInstances(ctx, pk)
		if err != nil {
			t.Fatal(err)
		}
		tg.fake.SetFaults(gcapitest.Faults{Rate5xx: 1, PathPrefix: "/healthimaging/"})
		calls := 0
		c2 := tg.client(t, gcapi.WithRetry(gcapi.RetryPolicy{BaseDelay: time.Millisecond, MaxDelay: time.Millisecond,
			OnRetry: func(context.Context, string, string, int, time.Duration, error) {
				calls++
				if calls == 2 {
					tg.fake.SetFaults(gcapitest.Faults{})
				}
			}}))
		var buf bytes.Buffer
		if _, err := c2.DownloadSigned(ctx, fresh.Instances[0].GetInstance, &buf); err != nil {
			t.Fatal(err)
		}
		if calls != 2 || !bytes.Equal(buf.Bytes(), want[fresh.Instances[0].SOPInstanceUID]) {
			t.Errorf("%d retries, %d bytes; want 2 retries and the stored instance", calls, buf.Len())
		}
	})
}

func TestDownloadSignedRefuses(t *testing.T) {
	tg, pk := dicomSetTarget(t)
	c := tg.client(t)
	ctx := context.Background()
	set, err := c.DICOMInstances(ctx, pk)
	if err != nil {
		t.Fatal(err)
	}
	good := set.Instances[0].GetInstance
	for name, mod := range map[string]func(r *gcapi.SignedRequest){
		"another method":   func(r *gcapi.SignedRequest) { r.Method = "POST" },
		"a body":           func(r *gcapi.SignedRequest) { r.Data = json.RawMessage(`"{\"a\":1}"`) },
		"another scheme":   func(r *gcapi.SignedRequest) { r.URL = strings.Replace(r.URL, "http://", "ftp://", 1) },
		"user info":        func(r *gcapi.SignedRequest) { r.URL = strings.Replace(r.URL, "http://", "http://u:p@", 1) },
		"no host":          func(r *gcapi.SignedRequest) { r.URL = "/healthimaging/x" },
		"unparsable":       func(r *gcapi.SignedRequest) { r.URL = "http://[::1" },
		"a changed header": func(r *gcapi.SignedRequest) { r.Headers = map[string]string{"Accept": "*/*"} },
	} {
		t.Run(name, func(t *testing.T) {
			r := good
			mod(&r)
			before := len(tg.fake.Requests())
			if _, err := c.DownloadSigned(ctx, r, io.Discard); err == nil {
				t.Fatal("sent and succeeded")
			}
			if name != "a changed header" && len(tg.fake.Requests()) != before {
				t.Error("the request was sent")
			}
		})
	}
}
