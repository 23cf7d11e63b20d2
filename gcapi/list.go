package gcapi

import (
	"context"
	"fmt"
	"net/url"
	"path"
	"strings"
)

// Archives lists every archive the token can view
// (grand-challenge.org app/grandchallenge/archives/views.py ArchiveViewSet:
// filtered by view permission). Viewing is not uploading: an archive listed
// here may still refuse this account's uploads.
//
// The server's ArchiveSerializer has no slug field; when the JSON holds
// none, Slug is taken from the archive's web url (/archives/<slug>/,
// Archive.get_absolute_url).
func (c *Client) Archives(ctx context.Context) ([]Archive, error) {
	all, err := listAll(ctx, c, "archives/", nil, func(a Archive) string { return a.PK })
	if err != nil {
		return nil, fmt.Errorf("list archives: %w", err)
	}
	for i := range all {
		if all[i].Slug == "" {
			all[i].Slug = slugFromURL(all[i].URL)
		}
	}
	return all, nil
}

// Interfaces lists every socket (component interface) on the server; any
// authenticated user may read them (components/views.py
// ComponentInterfaceViewSet).
func (c *Client) Interfaces(ctx context.Context) ([]Interface, error) {
	all, err := listAll(ctx, c, "components/interfaces/", nil, func(i Interface) string { return i.Slug })
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	return all, nil
}

// slugFromURL returns the last path segment of an archive's web url, or ""
// when it is not one.
func slugFromURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	p := strings.TrimSuffix(u.Path, "/")
	if path.Base(path.Dir(p)) != "archives" {
		return ""
	}
	return path.Base(p)
}
