package gcapitest

import (
	"encoding/json"
	"time"
)

// The wire types below are written from the real server's serializers
// (grand-challenge.org app/grandchallenge/{archives,components,cases,uploads}/serializers.py),
// not from package gcapi: the fake must not agree with the client by
// construction. Each field is one the serializer's Meta.fields lists, in its
// JSON spelling. They were checked field by field against the official
// Python client's generated models (DIAGNijmegen/rse-gcapi gcapi/models.py,
// 0.15.1): see docs/gcapitest.md.

// Page is one page of a limit/offset list
// (rest_framework/pagination.py LimitOffsetPagination.get_paginated_response).
type Page[T any] struct {
	Count    int     `json:"count"`
	Next     *string `json:"next"`
	Previous *string `json:"previous"`
	Results  []T     `json:"results"`
}

// Archive is ArchiveSerializer (archives/serializers.py): no slug field;
// logo is the URL of the archive's logo image (a required ImageField).
type Archive struct {
	PK          string `json:"pk"`
	Title       string `json:"title"`
	Logo        string `json:"logo"`
	Description string `json:"description"`
	APIURL      string `json:"api_url"`
	URL         string `json:"url"`
}

// Interface is ComponentInterfaceSerializer (components/serializers.py):
// kind is the display label, super_kind the SuperKind label.
type Interface struct {
	Title           string          `json:"title"`
	Description     string          `json:"description"`
	Slug            string          `json:"slug"`
	Kind            string          `json:"kind"`
	PK              int             `json:"pk"`
	DefaultValue    json.RawMessage `json:"default_value"`
	SuperKind       string          `json:"super_kind"`
	RelativePath    string          `json:"relative_path"`
	OverlaySegments json.RawMessage `json:"overlay_segments"`
	LookUpTable     json.RawMessage `json:"look_up_table"`
}

// ArchiveItem is ArchiveItemSerializer (archives/serializers.py), the GET
// form: each value carries the whole socket object.
type ArchiveItem struct {
	PK                       string          `json:"pk"`
	Title                    string          `json:"title"`
	Archive                  string          `json:"archive"` // archive api_url
	Values                   []ItemValue     `json:"values"`
	HangingProtocol          json.RawMessage `json:"hanging_protocol"`
	OptionalHangingProtocols json.RawMessage `json:"optional_hanging_protocols"`
	ViewContent              json.RawMessage `json:"view_content"`
}

// Value returns the item's value for the socket slug, or nil.
func (it *ArchiveItem) Value(slug string) *ItemValue {
	for i := range it.Values {
		if it.Values[i].Interface.Slug == slug {
			return &it.Values[i]
		}
	}
	return nil
}

// ItemValue is HyperlinkedComponentInterfaceValueSerializer
// (components/serializers.py): image is an image api_url, file a media URL.
type ItemValue struct {
	Interface Interface       `json:"interface"`
	Value     json.RawMessage `json:"value"`
	File      *string         `json:"file"`
	Image     *string         `json:"image"`
	PK        int             `json:"pk"`
}

// ArchiveItemPost is ArchiveItemPostSerializer, what POST and PATCH/PUT on
// /archives/items/ answer: values name the socket by slug.
type ArchiveItemPost struct {
	PK                       string          `json:"pk"`
	Title                    string          `json:"title"`
	Archive                  string          `json:"archive"`
	Values                   []ItemValuePost `json:"values"`
	HangingProtocol          json.RawMessage `json:"hanging_protocol"`
	OptionalHangingProtocols json.RawMessage `json:"optional_hanging_protocols"`
	ViewContent              json.RawMessage `json:"view_content"`
}

// ItemValuePost is ComponentInterfaceValuePostSerializer's output: its
// write-only fields (upload_session, user_upload, user_uploads) are absent.
type ItemValuePost struct {
	Interface string          `json:"interface"`
	Value     json.RawMessage `json:"value"`
	File      *string         `json:"file"`
	Image     *string         `json:"image"`
	PK        int             `json:"pk"`
	ImageName *string         `json:"image_name"`
}

// Upload is UserUploadSerializer (uploads/serializers.py).
type Upload struct {
	PK         string    `json:"pk"`
	Created    time.Time `json:"created"`
	Filename   string    `json:"filename"`
	Key        string    `json:"key"`
	S3UploadID string    `json:"s3_upload_id"`
	Status     string    `json:"status"`
	APIURL     string    `json:"api_url"`
}

// UploadParts is UserUploadPartsSerializer (list-parts).
type UploadParts struct {
	Upload
	Parts []Part `json:"parts"`
}

// UploadPresigned is UserUploadPresignedURLsSerializer; the keys of
// presigned_urls are part numbers as strings.
type UploadPresigned struct {
	Upload
	PresignedURLs map[string]string `json:"presigned_urls"`
}

// Part is PartSerializer (uploads/serializers.py).
type Part struct {
	ETag         string    `json:"ETag"`
	PartNumber   int       `json:"PartNumber"`
	LastModified time.Time `json:"LastModified"`
	Size         int64     `json:"Size"`
}

// UploadSession is RawImageUploadSessionSerializer (cases/serializers.py):
// user_uploads (pks) and uploads (api_urls) read the same relation, which
// empties as the server deletes the uploads.
type UploadSession struct {
	PK           string   `json:"pk"`
	Creator      int      `json:"creator"`
	Status       string   `json:"status"`
	ErrorMessage string   `json:"error_message"`
	ImageSet     []string `json:"image_set"`
	APIURL       string   `json:"api_url"`
	UserUploads  []string `json:"user_uploads"`
	Uploads      []string `json:"uploads"`
}

// Image is HyperlinkedImageSerializer (cases/serializers.py).
type Image struct {
	PK                 string          `json:"pk"`
	Name               string          `json:"name"`
	Files              []ImageFile     `json:"files"`
	DICOMImageSet      *DICOMImageSet  `json:"dicom_image_set"`
	Width              *int            `json:"width"`
	Height             *int            `json:"height"`
	Depth              *int            `json:"depth"`
	ColorSpace         string          `json:"color_space"`
	Modality           json.RawMessage `json:"modality"`
	EyeChoice          string          `json:"eye_choice"`
	StereoscopicChoice *string         `json:"stereoscopic_choice"`
	FieldOfView        *string         `json:"field_of_view"`
	ShapeWithoutColor  []int           `json:"shape_without_color"`
	Shape              []int           `json:"shape"`
	VoxelWidthMM       *float64        `json:"voxel_width_mm"`
	VoxelHeightMM      *float64        `json:"voxel_height_mm"`
	VoxelDepthMM       *float64        `json:"voxel_depth_mm"`
	APIURL             string          `json:"api_url"`
	PatientID          string          `json:"patient_id"`
	PatientName        string          `json:"patient_name"`
	PatientBirthDate   *string         `json:"patient_birth_date"`
	PatientAge         string          `json:"patient_age"`
	PatientSex         string          `json:"patient_sex"`
	StudyDate          *string         `json:"study_date"`
	StudyInstanceUID   string          `json:"study_instance_uid"`
	SeriesInstanceUID  string          `json:"series_instance_uid"`
	StudyDescription   string          `json:"study_description"`
	SeriesDescription  string          `json:"series_description"`
	WindowCenter       *float64        `json:"window_center"`
	WindowWidth        *float64        `json:"window_width"`
	Segments           json.RawMessage `json:"segments"`
}

// DICOMImageSet is DICOMImageSetSerializer (cases/serializers.py).
type DICOMImageSet struct {
	ImageSetID string `json:"image_set_id"`
}

// ImageFile is ImageFileSerializer (cases/serializers.py).
type ImageFile struct {
	PK        string `json:"pk"`
	Image     string `json:"image"` // image pk (a PrimaryKeyRelatedField)
	File      string `json:"file"`  // media URL, answered with a redirect
	ImageType string `json:"image_type"`
}

// Notification is what the server tells the user in its notification list
// (notifications cannot be read through the API: the API serializer
// exposes only "read"); tests read them here. Kind is "FILE-COPY" for a
// failed file value copy (components/tasks.py add_file_to_object) and
// "IMAGE-IMPORT" for a session that failed (cases/models.py update_status).
type Notification struct {
	Kind        string
	Description string
	Item        string // item pk
	Interface   string // socket slug
	Time        time.Time
}
