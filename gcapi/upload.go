package gcapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// CreateUpload starts a multipart upload for a file name (a basename).
//
// Each POST creates a new upload, so the create is never repeated after an
// ambiguous failure (a 500, 502, 503 or 504, or a connection that broke
// after sending): the error then satisfies errors.Is(err, ErrAmbiguous).
// What the caller does then is its own choice. gcingest creates a new
// upload on its next attempt and leaves the stray one, if the server made
// it, Initialized until the server deletes it after a day (it counts
// against the account's cap until then): an upload found by its file name
// alone may be another agent's on the same account (docs/PATTERNS.md,
// rule 1).
func (c *Client) CreateUpload(ctx context.Context, filename string) (*Upload, error) {
	if err := checkFilename(filename); err != nil {
		return nil, err
	}
	in := struct {
		Filename string `json:"filename"`
	}{filename}
	var u Upload
	if err := c.call(ctx, http.MethodPost, "uploads/", nil, in, &u, kindCreate); err != nil {
		return nil, fmt.Errorf("create upload for %s: %w", filename, err)
	}
	return &u, nil
}

func checkFilename(name string) error {
	if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return fmt.Errorf("gcapi: upload filename %q: want a base name", name)
	}
	if len(name) > 128 {
		return fmt.Errorf("gcapi: upload filename %q: longer than the server's 128 characters", name)
	}
	return nil
}

// Upload gets one upload by pk.
func (c *Client) Upload(ctx context.Context, pk string) (*Upload, error) {
	if err := checkPK(pk); err != nil {
		return nil, err
	}
	var u Upload
	if err := c.call(ctx, http.MethodGet, "uploads/"+pk+"/", nil, nil, &u, kindSafe); err != nil {
		return nil, err
	}
	return &u, nil
}

// Uploads lists the caller's uploads.
func (c *Client) Uploads(ctx context.Context) ([]Upload, error) {
	us, err := listAll(ctx, c, "uploads/", nil, func(u Upload) string { return u.PK })
	if err != nil {
		return nil, fmt.Errorf("list uploads: %w", err)
	}
	return us, nil
}

// uploadAction is the path of an action on an Initialized upload.
func uploadAction(u *Upload, action string) (string, error) {
	if err := checkPK(u.PK); err != nil {
		return "", err
	}
	if u.S3UploadID == "" || strings.ContainsAny(u.S3UploadID, "/?#") {
		return "", fmt.Errorf("gcapi: upload %s: bad s3_upload_id %q", u.PK, u.S3UploadID)
	}
	return "uploads/" + u.PK + "/" + url.PathEscape(u.S3UploadID) + "/" + action + "/", nil
}

// PresignedURLs asks for part URLs of an Initialized upload. The URLs are
// secrets (they carry a signature): do not log them.
func (c *Client) PresignedURLs(ctx context.Context, u *Upload, partNumbers []int) (map[int]string, error) {
	path, err := uploadAction(u, "generate-presigned-urls")
	if err != nil {
		return nil, err
	}
	for _, n := range partNumbers {
		if n < 1 || n > maxParts {
			return nil, fmt.Errorf("gcapi: upload %s: part number %d outside 1..%d", u.PK, n, maxParts)
		}
	}
	in := struct {
		PartNumbers []int `json:"part_numbers"`
	}{partNumbers}
	var out struct {
		PresignedURLs map[string]string `json:"presigned_urls"`
	}
	// Asking for URLs changes nothing on the server, so it is safe to repeat.
	if err := c.call(ctx, http.MethodPatch, path, nil, in, &out, kindSafe); err != nil {
		return nil, fmt.Errorf("presigned URLs for upload %s: %w", u.PK, err)
	}
	urls := make(map[int]string, len(out.PresignedURLs))
	for k, v := range out.PresignedURLs {
		n, err := strconv.Atoi(k)
		if err != nil {
			return nil, fmt.Errorf("presigned URLs for upload %s: part number %q is not a number", u.PK, k)
		}
		urls[n] = v
	}
	for _, n := range partNumbers {
		if urls[n] == "" {
			return nil, fmt.Errorf("presigned URLs for upload %s: no URL for part %d", u.PK, n)
		}
	}
	return urls, nil
}

// ListParts lists the parts the server holds for an Initialized upload.
// (The server answers 500 for an upload in any other state: GET it first.)
func (c *Client) ListParts(ctx context.Context, u *Upload) ([]Part, error) {
	path, err := uploadAction(u, "list-parts")
	if err != nil {
		return nil, err
	}
	var out struct {
		Parts []Part `json:"parts"`
	}
	if err := c.call(ctx, http.MethodGet, path, nil, nil, &out, kindSafe); err != nil {
		return nil, fmt.Errorf("list parts of upload %s: %w", u.PK, err)
	}
	return out.Parts, nil
}

// CompleteUpload completes an Initialized upload with its parts in order.
// Only ETag and PartNumber of each part are sent. It is not repeated after
// an ambiguous failure; UploadFile GETs the upload then.
func (c *Client) CompleteUpload(ctx context.Context, u *Upload, parts []Part) (*Upload, error) {
	path, err := uploadAction(u, "complete-multipart-upload")
	if err != nil {
		return nil, err
	}
	type part struct {
		ETag       string `json:"ETag"`
		PartNumber int    `json:"PartNumber"`
	}
	ps := make([]part, len(parts))
	for i, p := range parts {
		ps[i] = part{p.ETag, p.PartNumber}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].PartNumber < ps[j].PartNumber })
	in := struct {
		Parts []part `json:"parts"`
	}{ps}
	var out Upload
	if err := c.call(ctx, http.MethodPatch, path, nil, in, &out, kindCreate); err != nil {
		return nil, fmt.Errorf("complete upload %s: %w", u.PK, err)
	}
	return &out, nil
}

// AbortUpload aborts an Initialized upload.
func (c *Client) AbortUpload(ctx context.Context, u *Upload) (*Upload, error) {
	path, err := uploadAction(u, "abort-multipart-upload")
	if err != nil {
		return nil, err
	}
	var out Upload
	if err := c.call(ctx, http.MethodPatch, path, nil, struct{}{}, &out, kindCreate); err != nil {
		return nil, fmt.Errorf("abort upload %s: %w", u.PK, err)
	}
	return &out, nil
}
