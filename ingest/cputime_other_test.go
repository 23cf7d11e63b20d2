//go:build !unix

package ingest

import "time"

// cpuTime is not measured here: BenchmarkBacklog's CPU figures read 0.
func cpuTime() time.Duration { return 0 }
