#!/usr/bin/env bash
# Diffusion demo on the embedded digits (no download): train the quick-start classifier and a
# class-conditional EDM U-Net (configs/diffusion_digits.py), sample 100 digits per class with
# Heun (18 steps, 35 network evaluations) and guidance 2, and score the samples with the
# classifier (per-class accuracy; goal >= 0.80) and FD-small_cnn / KID against the train split.
# Usage: scripts/diffusion_demo.sh [WORKDIR]          (default workdirs/diffusion_demo)
# Writes WORKDIR/samples/grid.png (one column per class), samples.npz and scores.json.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR="${1:-workdirs/diffusion_demo}"
if [ -z "${VIRTUAL_ENV:-}" ]; then EXTRAS="" source scripts/venv.sh; fi

t0=$(date +%s)
python -m jaxlab.train --config=configs/quickstart.py --workdir="$WORKDIR/classifier"
t1=$(date +%s)
python -m jaxlab.train --config=configs/diffusion_digits.py --workdir="$WORKDIR/diffusion"
t2=$(date +%s)
python -m jaxlab.sample --workdir="$WORKDIR/diffusion" --num=1000 --sampler=heun --steps=18 \
  --guidance=2 --ema --out="$WORKDIR/samples"
t3=$(date +%s)
python -m jaxlab.metrics.sample_quality --samples="$WORKDIR/samples/samples.npz" \
  --classifier="$WORKDIR/classifier" --json="$WORKDIR/samples/scores.json"
t4=$(date +%s)
echo "classifier: $((t1 - t0)) s, diffusion training: $((t2 - t1)) s, sampling: $((t3 - t2)) s, scoring: $((t4 - t3)) s"
echo "grid: $WORKDIR/samples/grid.png"
