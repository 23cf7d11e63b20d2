package ingest

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkQueue100k queues 100,000 images with due times spread over an
// hour around now (half due at once, half later), then moves the clock
// past them all and drains the queue as workers do: next, then release.
// Run with
//
//	go test -run '^$' -bench Queue -benchmem ./ingest/
func BenchmarkQueue100k(b *testing.B) {
	const n = 100_000
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(1, 2))
	due := make([]time.Time, n)
	for i := range due {
		due[i] = t0.Add(time.Duration(rng.Int64N(int64(time.Hour))) - 30*time.Minute)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for range b.N {
		now := t0
		p := NewPipeline(PipelineConfig{Now: func() time.Time { return now }}, nil, nil, nil)
		for i, at := range due {
			p.enqueue(uint64(i+1), at)
		}
		now = t0.Add(time.Hour)
		for range n {
			id, ok := p.next(ctx)
			if !ok {
				b.Fatal("next: queue ended early")
			}
			p.release(id)
		}
	}
}
