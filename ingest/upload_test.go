package ingest

import (
	"context"
	"sync"

	"github.com/gcingest/gcingest/gcapi"
)

// learnt records the upload pks a pipeline was told of (its OnCreated ran).
type learnt struct {
	mu       sync.Mutex
	tracking bool
	pks      map[string]bool
}

func (l *learnt) add(pk string) {
	l.mu.Lock()
	l.pks[pk] = true
	l.mu.Unlock()
}

func (l *learnt) has(pk string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pks[pk]
}

// unlearnt reports whether pk is an upload no pipeline of this harness
// was told of: its create's answer never reached the pipeline.
func (l *learnt) unlearnt(pk string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tracking && !l.pks[pk]
}

// learnAPI passes every upload pk that reaches the pipeline's OnCreated to
// l. Put it outside any wrapper that may lose the answer (crashAPI), so
// that what it records is what the pipeline really learnt.
type learnAPI struct {
	API
	l *learnt
}

func (a learnAPI) UploadFile(ctx context.Context, f gcapi.FileUpload) (*gcapi.Upload, error) {
	on := f.OnCreated
	f.OnCreated = func(u *gcapi.Upload) error {
		a.l.add(u.PK)
		if on != nil {
			return on(u)
		}
		return nil
	}
	return a.API.UploadFile(ctx, f)
}

// learning wraps api so that the harness knows which uploads the pipeline
// learnt of.
func (h *harness) learning(api API) API {
	h.learnt.mu.Lock()
	h.learnt.tracking = true
	h.learnt.mu.Unlock()
	return learnAPI{API: api, l: h.learnt}
}

// strays counts the Initialized uploads on the server that no pipeline of
// h learnt of. One crash can lose at most the creates in flight at that
// moment: one per worker.
func (h *harness) strays() int {
	n := 0
	for _, u := range h.srv.Uploads() {
		if u.Status == gcapi.UploadInitialized && h.learnt.unlearnt(u.PK) {
			n++
		}
	}
	return n
}
