#!/usr/bin/env bash
# The main job on the shipped model: draw a 10x10 grid of MNIST digits (one row per class)
# and measure bits/dim on the first 1000 MNIST test images.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build -c release --product tarflow
tarflow=.build/release/tarflow
$tarflow sample Models/mnist.tflow --labels docs/mnist-grid-labels.npy --seed 0 --grid-columns 10 -o mnist-samples.png
echo "wrote mnist-samples.png"
if [ -f ../shared/data/mnist/t10k-images-idx3-ubyte.gz ]; then
  $tarflow likelihood Models/mnist.tflow --images ../shared/data/mnist/t10k-images-idx3-ubyte.gz --limit 1000 --threads 2
fi
