package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

// otherAgent is another agent on the same account as a test's pipeline,
// acting through its own gcapi client while the pipeline is stopped:
// uploads with the pipeline's file names, some left Initialized, some
// Completed, and an item of its own in the archive. check says whether
// the pipeline touched any of it.
type otherAgent struct {
	t       *testing.T
	srv     *gcapitest.Server
	api     *gcapi.Client
	uploads map[string]string // pk → status as the other agent left it
	ever    map[string]bool   // every upload pk it made, expired ones too
	item    string            // pk of its item
	values  string            // its item's values as it left them (JSON)
	seen    int               // requests already looked at by check
}

// upperBearer sends the token's keyword as the official Python client does
// ("BEARER"; the server compares it case-insensitively), which tells the
// other agent's requests apart in the fake's log, whenever the fake logs
// them (a reset connection is logged after the client gave up).
type upperBearer struct{ base http.RoundTripper }

func (u upperBearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if a, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "BEARER "+a)
	}
	return u.base.RoundTrip(r)
}

// newOtherAgent makes the other agent's item: an image value under the
// pipeline's interface, in the pipeline's archive.
func newOtherAgent(t *testing.T, srv *gcapitest.Server, archive, iface string) *otherAgent {
	t.Helper()
	hc := srv.Client()
	hc = &http.Client{Transport: upperBearer{base: hc.Transport}, Timeout: hc.Timeout, CheckRedirect: hc.CheckRedirect}
	api, err := gcapi.New(srv.URL, srv.Token(), gcapi.WithHTTPClient(hc),
		gcapi.WithRetry(gcapi.RetryPolicy{MaxAttempts: 4, BaseDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	o := &otherAgent{t: t, srv: srv, api: api, uploads: map[string]string{}, ever: map[string]bool{}}
	it := srv.AddItem(archive, "another agent's item")
	if err := srv.AddImageValue(it.PK, iface, "theirs.mha", gcapitest.SampleMHA(99, 4, 4, 2)); err != nil {
		t.Fatal(err)
	}
	o.item = it.PK
	o.values = o.itemValues()
	return o
}

func (o *otherAgent) itemValues() string {
	for _, it := range o.srv.Items(testArchive) {
		if it.PK == o.item {
			b, err := json.Marshal(it.Values)
			if err != nil {
				o.t.Fatal(err)
			}
			return string(b)
		}
	}
	return "(item gone)"
}

// act creates, for each name, one upload left Initialized and one
// Completed. Faults may refuse some requests: what was created is kept
// track of all the same (an upload left Initialized by a failed send is
// the other agent's too).
func (o *otherAgent) act(names ...string) {
	o.t.Helper()
	ctx := context.Background()
	for _, name := range names {
		if u, err := o.api.CreateUpload(ctx, name); err == nil {
			o.uploads[u.PK] = ""
		}
		body := []byte("the other agent's " + name)
		var pk string
		_, _ = o.api.UploadFile(ctx, gcapi.FileUpload{Filename: name, Body: bytes.NewReader(body), Size: int64(len(body)),
			OnCreated: func(u *gcapi.Upload) error { pk = u.PK; return nil }})
		if pk != "" {
			o.uploads[pk] = ""
		}
	}
	for _, u := range o.srv.Uploads() {
		if _, ok := o.uploads[u.PK]; ok {
			o.uploads[u.PK] = u.Status
			o.ever[u.PK] = true
		}
	}
	n := map[string]int{}
	for _, st := range o.uploads {
		n[st]++
	}
	o.t.Logf("the other agent holds uploads %v", n)
}

// check fails the test if anything of the other agent's is not as it left
// it, or if a request not its own named one of its uploads or its item.
// It is called before the server expires uploads (a day passes), which
// then starts the other agent afresh with forget.
func (o *otherAgent) check() {
	o.t.Helper()
	now := map[string]string{}
	for _, u := range o.srv.Uploads() {
		now[u.PK] = u.Status
	}
	for pk, was := range o.uploads {
		if now[pk] != was {
			o.t.Errorf("the other agent's upload %s is %q; it left it %q", pk, now[pk], was)
		}
	}
	if got := o.itemValues(); got != o.values {
		o.t.Errorf("the other agent's item %s holds %s; it left %s", o.item, got, o.values)
	}
	reqs := o.srv.Requests()
	for i := o.seen; i < len(reqs); i++ {
		r := reqs[i]
		if strings.HasPrefix(r.Authorization, "BEARER ") || !strings.HasPrefix(r.Path, "/api/") {
			continue // the other agent's own, or a presigned S3 request (no token)
		}
		for pk := range o.ever {
			if strings.Contains(r.Path, pk) {
				o.t.Errorf("the pipeline sent %s %s (status %d, fault %q), naming the other agent's upload", r.Method, r.Path, r.Status, r.Fault)
			}
		}
		if strings.Contains(r.Path, o.item) && r.Method != "GET" {
			o.t.Errorf("the pipeline sent %s %s to the other agent's item", r.Method, r.Path)
		}
	}
	o.seen = len(reqs)
}

// forget drops the uploads the server expired; the item stays.
func (o *otherAgent) forget() {
	clear(o.uploads)
}
