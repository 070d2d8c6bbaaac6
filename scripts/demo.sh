#!/usr/bin/env bash
# The main job on the shipped model, on a fresh clone: draw a 10x10 grid of MNIST digits (one
# row per class), measure bits/dim on the 10,000 MNIST test images shipped in Models/data/mnist
# and the flow's accuracy as a Bayes classifier on the first 1000 of them (all 10,000 take
# about 4 minutes on 2 cores; pass --full for them). Progress bars show on a terminal.
set -euo pipefail
cd "$(dirname "$0")/.."
classify_limit=(--limit 1000)
[ "${1:-}" = "--full" ] && classify_limit=()
bash scripts/setup.sh
swift build -c release --product tarflow
tarflow=.build/release/tarflow
images=Models/data/mnist/t10k-images-idx3-ubyte.gz
labels=Models/data/mnist/t10k-labels-idx1-ubyte.gz
threads=$(( $(nproc) < 4 ? $(nproc) : 4 ))
$tarflow sample Models/mnist.tflow --labels docs/mnist-grid-labels.npy --seed 0 --grid-columns 10 -o mnist-samples.png --threads "$threads"
echo "wrote mnist-samples.png"
echo "bits/dim of the 10,000 MNIST test images (official: 5.3878):"
$tarflow likelihood Models/mnist.tflow --images "$images" --threads "$threads"
echo "Bayes classifier on ${classify_limit[1]:-all 10,000} test images (official, first 1000: 0.971):"
$tarflow classify Models/mnist.tflow --images "$images" --true-labels "$labels" "${classify_limit[@]}" --threads "$threads"
