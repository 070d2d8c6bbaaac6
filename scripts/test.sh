#!/usr/bin/env bash
# Everything CI checks: the Swift test suite and the C reader of the model format.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build --build-tests
swift test
make -C Tools/flowinfo check
