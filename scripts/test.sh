#!/usr/bin/env bash
# Everything CI checks: the C reader of the model format (built first, so the Swift tests
# also run it on compiled files), the Swift test suite, and a one-node Slurm cluster running
# sharded jobs (scripts/slurm-test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
make -C Tools/flowinfo
swift build --build-tests
swift test
make -C Tools/flowinfo check
bash scripts/slurm-test.sh
