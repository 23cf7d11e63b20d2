package ingest

// syncDisk does nothing on Windows, which has no sync(2); the benchmark's
// files are then possibly still in the cache when it starts.
func syncDisk() {}
