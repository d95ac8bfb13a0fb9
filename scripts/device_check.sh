#!/usr/bin/env bash
# The device check (llava/bench/device_check.py): bf16 attention implementations, cached vs
# uncached generation, the 7B-shaped training step, padded vs padding-free batches, batch-1 decode
# against the HBM bound and a one-process DeepSpeed ZeRO-3 run, printed as one JSON object.
#
#   bash scripts/device_check.sh            # one H100/H200 GPU (under 8 minutes)
#   bash scripts/device_check.sh --tiny     # tiny shapes on the CPU (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m llava.bench.device_check "$@"
