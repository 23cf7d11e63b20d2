#!/bin/sh
# Compares the DICOM receiver's throughput with dcmtk's storescp, side by
# side in one run on this machine (issue 21: a 500-instance series of
# 256 KiB instances, at least 0.8 x storescp's speed, under 64 MiB of
# memory). The two take turns, DIMSE_BENCH_ROUNDS pairs of runs (default
# 7); the verdict is the median of the pairs' ratios. Needs dcmtk
# (storescu, storescp, echoscu, dcmdump) on PATH. See
# TestThroughputVsStorescp in bench_test.go for the other settings.
#
#   dimse/bench.sh                      # 7 pairs of 500 x 256 KiB
#   DIMSE_BENCH_ROUNDS=15 dimse/bench.sh
#   DIMSE_BENCH_INSTANCES=2000 DIMSE_BENCH_SIZE=65536 dimse/bench.sh
#   DIMSE_BENCH_PROFILE=/tmp/prof dimse/bench.sh   # pprof of each server run
set -eu
cd "$(dirname "$0")/.."
DIMSE_BENCH=1 exec go test -count=1 -timeout 30m -run '^TestThroughputVsStorescp$' -v ./dimse/
