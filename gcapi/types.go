package gcapi

import (
	"encoding/json"
	"time"
)

// Upload statuses as the server shows them (UserUpload.get_status_display).
const (
	UploadPending     = "Pending"
	UploadInitialized = "Initialized"
	UploadCompleted   = "Completed"
	UploadAborted     = "Aborted"
)

// Upload session statuses as the server shows them.
const (
	SessionQueued    = "Queued"
	SessionStarted   = "Started"
	SessionReQueued  = "Re-Queued"
	SessionFailed    = "Failed"
	SessionSucceeded = "Succeeded"
	SessionCancelled = "Cancelled"
)

// Socket super kinds (ComponentInterface.super_kind labels).
const (
	SuperKindImage = "Image"
	SuperKindFile  = "File"
	SuperKindValue = "Value"
)

// Page is one page of a limit/offset paginated list.
type Page[T any] struct {
	Count    int     `json:"count"`
	Next     *string `json:"next"`
	Previous *string `json:"previous"`
	Results  []T     `json:"results"`
}

// Archive is an archive as GET /api/v1/archives/ returns it. The server
// sends no slug (grand-challenge.org app/grandchallenge/archives/serializers.py
// ArchiveSerializer); it filters by ?slug= instead.
type Archive struct {
	PK          string `json:"pk"`
	Title       string `json:"title"`
	Logo        string `json:"logo,omitempty"`
	Description string `json:"description,omitempty"`
	APIURL      string `json:"api_url"`
	URL         string `json:"url,omitempty"`
	// Slug is not in the server's JSON (ArchiveSerializer has no slug
	// field): the client fills it in from the query or the web url.
	Slug string `json:"-"`
}

// Interface is a socket (component interface) as GET /api/v1/components/interfaces/ returns it.
type Interface struct {
	PK           int             `json:"pk"`
	Title        string          `json:"title"`
	Description  string          `json:"description,omitempty"`
	Slug         string          `json:"slug"`
	Kind         string          `json:"kind"`
	SuperKind    string          `json:"super_kind"`
	RelativePath string          `json:"relative_path"`
	DefaultValue json.RawMessage `json:"default_value,omitempty"`
}

// ArchiveItem is an archive item. Items have no api_url; they are addressed by pk.
type ArchiveItem struct {
	PK      string      `json:"pk"`
	Title   string      `json:"title"`
	Archive string      `json:"archive"` // the archive's api_url
	Values  []ItemValue `json:"values"`
}

// Value returns the item's value for the interface slug, or nil.
func (it *ArchiveItem) Value(slug string) *ItemValue {
	for i := range it.Values {
		if it.Values[i].Interface.Slug == slug {
			return &it.Values[i]
		}
	}
	return nil
}

// ItemValue is one value (ComponentInterfaceValue) of an archive item.
//
// On GET the server sends the whole socket object as "interface"; in the
// PATCH response it sends only the slug. Both decode into Interface; in the
// second case only Interface.Slug is set.
type ItemValue struct {
	PK        int             `json:"pk"`
	Interface Interface       `json:"interface"`
	Value     json.RawMessage `json:"value,omitempty"`
	File      *string         `json:"file"`  // download URL of a file value
	Image     *string         `json:"image"` // API URL of an image value
	ImageName *string         `json:"image_name,omitempty"`
}

// UnmarshalJSON accepts "interface" both as a slug string and as an object.
func (v *ItemValue) UnmarshalJSON(b []byte) error {
	type plain ItemValue
	var raw struct {
		plain
		Interface json.RawMessage `json:"interface"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*v = ItemValue(raw.plain)
	if len(raw.Interface) > 0 && raw.Interface[0] == '"' {
		return json.Unmarshal(raw.Interface, &v.Interface.Slug)
	}
	if len(raw.Interface) > 0 && string(raw.Interface) != "null" {
		return json.Unmarshal(raw.Interface, &v.Interface)
	}
	return nil
}

// ValueUpdate is one entry of the "values" list sent in PATCH /archives/items/{pk}/.
// Exactly one source is set: UserUploads (image from files), UserUpload
// (file value), Image (existing image API URL) or Value (JSON value).
type ValueUpdate struct {
	Interface   string          `json:"interface"`
	UserUploads []string        `json:"user_uploads,omitempty"` // upload api_urls
	UserUpload  string          `json:"user_upload,omitempty"`  // upload api_url
	Image       string          `json:"image,omitempty"`        // image api_url
	Value       json.RawMessage `json:"value,omitempty"`        // JSON value, sent as is
	// ImageName goes with UserUploads for a socket of kind DICOM Image Set,
	// which requires it (grand-challenge.org
	// app/grandchallenge/components/serializers.py, _validate_dicom_image).
	ImageName string `json:"image_name,omitempty"`
}

// Upload is a user upload (one S3 multipart upload).
type Upload struct {
	PK         string    `json:"pk"`
	Created    time.Time `json:"created"`
	Filename   string    `json:"filename"`
	Key        string    `json:"key,omitempty"`
	S3UploadID string    `json:"s3_upload_id"`
	Status     string    `json:"status"`
	APIURL     string    `json:"api_url"`
}

// Part is one part of a multipart upload.
type Part struct {
	ETag         string     `json:"ETag"`
	PartNumber   int        `json:"PartNumber"`
	LastModified *time.Time `json:"LastModified,omitempty"`
	Size         int64      `json:"Size,omitempty"`
}

// UploadSession is a raw image upload session. The server creates one for
// each image import started by a PATCH with user_uploads.
type UploadSession struct {
	PK           string   `json:"pk"`
	Creator      int      `json:"creator,omitempty"`
	Status       string   `json:"status"`
	ErrorMessage string   `json:"error_message"`
	ImageSet     []string `json:"image_set"` // image api_urls
	APIURL       string   `json:"api_url"`
	UserUploads  []string `json:"user_uploads"` // upload pks
	Uploads      []string `json:"uploads"`      // upload api_urls
}

// Image is an image as GET /api/v1/cases/images/ returns it.
type Image struct {
	PK     string      `json:"pk"`
	Name   string      `json:"name"`
	Files  []ImageFile `json:"files"`
	APIURL string      `json:"api_url"`
	Width  *int        `json:"width,omitempty"`
	Height *int        `json:"height,omitempty"`
	Depth  *int        `json:"depth,omitempty"`
	// SeriesInstanceUID is the DICOM series the image was built from, ""
	// for other formats (HyperlinkedImageSerializer, grand-challenge.org
	// app/grandchallenge/cases/serializers.py); with Depth, the number of
	// slices, it tells whether an item holds a whole series.
	SeriesInstanceUID string `json:"series_instance_uid,omitempty"`
	// DICOMImageSet is set for an image kept as a DICOM image set in AWS
	// HealthImaging (a "DICOM Image Set" socket's value): such an image has
	// no Files; its instances are fetched with DICOMInstances.
	DICOMImageSet *DICOMImageSet `json:"dicom_image_set,omitempty"`
}

// DICOMImageSet is the image's DICOMImageSetSerializer
// (grand-challenge.org app/grandchallenge/cases/serializers.py).
type DICOMImageSet struct {
	ImageSetID string `json:"image_set_id"`
}

// DICOMInstances is what GET /api/v1/cases/images/{pk}/dicom/instances/
// answers: a signed request per instance of the image's DICOM image set
// (cases/views.py ImageViewSet.dicom_instances). The server lists an
// instance once per frame, so a multi-frame instance repeats.
type DICOMInstances struct {
	ImageSetID string          `json:"image_set_id"`
	Instances  []DICOMInstance `json:"instances"`
}

// DICOMInstance is one entry of DICOMInstances.
type DICOMInstance struct {
	SOPInstanceUID string        `json:"sop_instance_uid"`
	GetInstance    SignedRequest `json:"get_instance"`
}

// SignedRequest is a request the server signed for another service (AWS
// HealthImaging), to be sent exactly as given: the signature covers the
// method, URL and headers (components/backends/base.py
// serialize_aws_request). It carries its own credentials, never the token.
type SignedRequest struct {
	URL     string            `json:"url"`
	Method  string            `json:"method"`
	Data    json.RawMessage   `json:"data"`
	Headers map[string]string `json:"headers"`
}

// Image file types.
const (
	ImageTypeMHD  = "MHD"
	ImageTypeTIFF = "TIFF"
	ImageTypeDZI  = "DZI"
)

// ImageFile is one stored file of an image.
type ImageFile struct {
	PK        string `json:"pk"`
	Image     string `json:"image"` // image pk
	File      string `json:"file"`  // download URL (answers with a redirect)
	ImageType string `json:"image_type"`
}

// InterfacesInUse returns the interfaces the items hold values of, in the
// order first seen, and how many items hold each (by slug): what a new item
// of the same archive usually wants too.
func InterfacesInUse(items []ArchiveItem) ([]Interface, map[string]int) {
	used := map[string]int{}
	var ifaces []Interface
	for _, it := range items {
		for _, v := range it.Values {
			s := v.Interface.Slug
			if used[s] == 0 {
				ifaces = append(ifaces, v.Interface)
			}
			used[s]++
		}
	}
	return ifaces, used
}
