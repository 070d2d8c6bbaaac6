#!/usr/bin/env bash
# Everything CI checks: the C reader of the model format (built first, so the Swift tests
# also run it on compiled files) and the Swift test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
make -C Tools/flowinfo
swift build --build-tests
swift test
make -C Tools/flowinfo check
