package ingest

import (
	"slices"
	"testing"
	"time"
)

// drain takes every image due at now, none busy or held, in order.
func drain(q *queue, now time.Time) []uint64 {
	never := func(uint64) bool { return false }
	var got []uint64
	for {
		id, ok, _ := q.take(now, never, never)
		if !ok {
			return got
		}
		got = append(got, id)
	}
}

func TestQueueOrder(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	later := t0.Add(time.Minute)
	tests := []struct {
		name string
		add  func(q *queue)
		now  time.Time
		want []uint64
	}{
		{"due now, first queued first taken", func(q *queue) {
			q.add(3, time.Time{}, t0)
			q.add(1, time.Time{}, t0)
			q.add(2, t0.Add(-time.Hour), t0)
		}, t0, []uint64{3, 1, 2}},
		{"an image queued twice is taken once, in its first place", func(q *queue) {
			q.add(1, time.Time{}, t0)
			q.add(2, time.Time{}, t0)
			q.add(1, time.Time{}, t0)
			q.add(1, later, t0)
		}, later, []uint64{1, 2}},
		{"due later waits for its time", func(q *queue) {
			q.add(1, later, t0)
			q.add(2, time.Time{}, t0)
		}, t0, []uint64{2}},
		{"due later, the last call wins", func(q *queue) {
			q.add(1, later, t0)
			q.add(1, later.Add(time.Hour), t0)
		}, later, nil},
		{"due later, then now: behind what was due before", func(q *queue) {
			q.add(1, later, t0)
			q.add(2, time.Time{}, t0)
			q.add(1, time.Time{}, t0)
		}, t0, []uint64{2, 1}},
		{"by due time once due", func(q *queue) {
			q.add(1, later.Add(time.Second), t0)
			q.add(2, later, t0)
			q.add(3, time.Time{}, t0)
		}, later.Add(time.Second), []uint64{3, 2, 1}},
		{"first goes ahead, in the order put", func(q *queue) {
			q.add(1, time.Time{}, t0)
			q.add(2, later, t0)
			q.first(3)
			q.first(2)
		}, t0, []uint64{3, 2, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q queue
			tt.add(&q)
			if got := drain(&q, tt.now); !slices.Equal(got, tt.want) {
				t.Errorf("taken %v, want %v", got, tt.want)
			}
		})
	}
}

func TestQueueTakeBusyHeld(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var q queue
	q.first(1)
	q.first(2)
	q.add(3, time.Time{}, t0)
	q.add(4, t0.Add(time.Minute), t0)
	busy := func(id uint64) bool { return id == 1 }
	recovering := map[uint64]bool{1: true, 2: true}
	held := func(id uint64) bool { return len(recovering) > 0 && !recovering[id] }

	id, ok, _ := q.take(t0, busy, held)
	if !ok || id != 2 {
		t.Fatalf("take = %d, %v; want 2, the first not busy", id, ok)
	}
	if id, ok, wake := q.take(t0, busy, held); ok || !wake.IsZero() {
		t.Fatalf("take = %d, %v, %v; want nothing and no time: 3 is held", id, ok, wake)
	}
	if !q.due(1, t0) || q.due(2, t0) || q.due(4, t0) {
		t.Errorf("due(1, 2, 4) = %v, %v, %v; want true, false, false", q.due(1, t0), q.due(2, t0), q.due(4, t0))
	}
	recovering = nil
	if id, ok, _ := q.take(t0, busy, held); !ok || id != 3 {
		t.Fatalf("take = %d, %v; want 3 once nothing is held", id, ok)
	}
	if _, ok, wake := q.take(t0, busy, held); ok || !wake.Equal(t0.Add(time.Minute)) {
		t.Fatalf("take = %v, wake %v; want nothing until 4 is due at %v", ok, wake, t0.Add(time.Minute))
	}
	if got := drain(&q, t0.Add(time.Minute)); !slices.Equal(got, []uint64{1, 4}) {
		t.Errorf("taken %v once 1 is free and 4 due, want [1 4]", got)
	}
}
