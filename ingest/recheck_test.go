package ingest

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/state"
)

// beforeItemByPK runs before once, before the first read or PATCH of an
// archive item by pk: the moment between recording the intent to attach
// and attaching.
type beforeItemByPK struct {
	API
	once   *sync.Once
	before func()
}

func (a beforeItemByPK) ArchiveItem(ctx context.Context, pk string) (*gcapi.ArchiveItem, error) {
	a.once.Do(a.before)
	return a.API.ArchiveItem(ctx, pk)
}

func (a beforeItemByPK) UpdateArchiveItem(ctx context.Context, pk string, values []gcapi.ValueUpdate) (*gcapi.ArchiveItem, error) {
	a.once.Do(a.before)
	return a.API.UpdateArchiveItem(ctx, pk, values)
}

// twin returns a second agent on h's drop folder: its own state file, the
// same folder, watch, archive and account, as two hosts on one share.
func (h *harness) twin() *harness {
	h.t.Helper()
	dir := h.t.TempDir()
	s := &harness{t: h.t, srv: h.srv, api: h.api, dir: dir, watch: h.watch,
		statePath: filepath.Join(dir, "state", "state.db"), learnt: &learnt{pks: map[string]bool{}}}
	if err := os.MkdirAll(filepath.Dir(s.statePath), 0o755); err != nil {
		h.t.Fatal(err)
	}
	s.open()
	h.t.Cleanup(func() { s.store.Close() })
	return s
}

// Two agents on one folder that cannot hold a lock file (Watch.Unlocked),
// with two state files, send the same image. The second one has found the
// item and recorded its intent when the first one lands the value: the
// second reads the item again right before its PATCH and does not set the
// value a second time. Without the re-check the value was set twice (two
// PATCHes, two imports, the first image replaced).
func TestUnlockedFolderRecheckSetsValueOnce(t *testing.T) {
	a := newHarness(t, gcapitest.Options{}, "keep")
	a.watch.Unlocked = true
	b := a.twin()
	g := a.group(KindSingle, "ct.mha", a.write("ct.mha", gcapitest.SampleMHA(1, 4, 4, 2)))

	// Between b's intent and its PATCH (its re-check is the first read by
	// pk: b created the item), a runs the same image to its end.
	var landed []state.Image
	first := func() {
		pa := a.pipeline(a.config())
		stop := start(pa)
		if err := pa.Submit(context.Background(), g); err != nil {
			t.Error(err)
		}
		landed = a.waitSettled(1)
		if err := stop(); err != nil {
			t.Error(err)
		}
	}
	pb := NewPipeline(b.config(), b.store, b.learning(beforeItemByPK{API: b.api, once: &sync.Once{}, before: first}), nil)
	stop := start(pb)
	if err := pb.Submit(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	got := b.waitSettled(1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	if len(landed) != 1 || landed[0].State != state.Done && landed[0].State != state.Finished {
		t.Fatalf("first agent: %s; want its image done", describe(landed))
	}
	if got[0].State != state.Duplicate || got[0].ItemPK != landed[0].ItemPK {
		t.Errorf("second agent: %s; want a duplicate of item %s", describe(got), landed[0].ItemPK)
	}
	if n := a.patches(); n != 1 {
		t.Errorf("%d PATCHes of the item; want its value set once", n)
	}
	items := a.srv.Items(testArchive)
	if len(items) != 1 {
		t.Fatalf("%d items; want 1", len(items))
	}
	if v := items[0].Value(testIface); v == nil || v.Image == nil || *v.Image != landed[0].ImageURL {
		t.Errorf("item value %+v; want the first agent's image %s", v, landed[0].ImageURL)
	}
	if n := len(a.srv.Sessions()); n != 1 {
		t.Errorf("%d import sessions; want 1", n)
	}
}
