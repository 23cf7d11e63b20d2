package gcapi

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
)

const (
	// pageLimit is the page size asked for, as gcapi does.
	pageLimit = 100
	// maxWalks bounds how often a list is walked when it looks incomplete.
	maxWalks = 3
)

// listAll walks a limit/offset list to its end and returns its items
// de-duplicated by key, in the order first seen.
//
// The server gives most lists no order, so offset pages over a changing or
// re-ordered query can repeat some rows and skip others. A walk therefore
// de-duplicates, and when the count changed during the walk, or fewer
// distinct rows than the count were seen, the list is walked again (at most
// maxWalks times in all), keeping the union of what each walk saw. An item
// that vanished in between may thus still be returned; one that existed
// throughout is not missed unless every walk missed it.
func listAll[T any](ctx context.Context, c *Client, path string, q url.Values, key func(T) string) ([]T, error) {
	seen := map[string]bool{}
	var out []T
	for walk := 1; ; walk++ {
		first, changed := -1, false
		for offset := 0; ; {
			qq := url.Values{}
			for k, v := range q {
				qq[k] = v
			}
			qq.Set("limit", strconv.Itoa(pageLimit))
			qq.Set("offset", strconv.Itoa(offset))
			var page Page[T]
			if err := c.call(ctx, http.MethodGet, path, qq, nil, &page, kindSafe); err != nil {
				return nil, err
			}
			if first < 0 {
				first = page.Count
			} else if page.Count != first {
				changed = true
			}
			for _, it := range page.Results {
				k := key(it)
				if !seen[k] {
					seen[k] = true
					out = append(out, it)
				}
			}
			offset += len(page.Results)
			if len(page.Results) == 0 || offset >= page.Count {
				first = page.Count // the last count seen is the one to meet
				break
			}
		}
		if walk >= maxWalks || (!changed && len(out) >= first) {
			if len(out) < first {
				c.log.Debug("list still incomplete after walking it again", "path", path, "count", first, "seen", len(out))
			}
			return out, nil
		}
	}
}
