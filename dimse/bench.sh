#!/bin/sh
# Compares the DICOM receiver's throughput with dcmtk's storescp, side by
# side in one run on this machine (issue 21: a 500-instance series of
# 256 KiB instances, at least 0.8 x storescp's speed, under 64 MiB of memory).
# Needs dcmtk (storescu, storescp, echoscu, dcmdump) on PATH.
#
#   dimse/bench.sh                      # 500 x 256 KiB
#   DIMSE_BENCH_INSTANCES=2000 DIMSE_BENCH_SIZE=65536 dimse/bench.sh
set -eu
cd "$(dirname "$0")/.."
DIMSE_BENCH=1 exec go test -count=1 -run '^TestThroughputVsStorescp$' -v ./dimse/
