#!/usr/bin/env bash
# Which decoder likelihood to train with: four short runs side by side, then a table.
#   bash benchmarks/likelihood_sweep.sh [MINUTES]   (default 10; about MINUTES + 2 on 2 cores)
# 64 px and a smaller model so that a few epochs fit; every run gets the same minutes, one
# thread each, all four at once, so they share the machine equally.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
out=runs/sweep
mkdir -p "$out"
for likelihood in gaussian_optimal gaussian_learned gaussian_fixed bernoulli; do
  .venv/bin/python train.py --data ../shared/data/lfw --out "$out/$likelihood" --image-size 64 \
    --channels 16 32 64 128 --latent-dim 128 --likelihood "$likelihood" --epochs 30 \
    --time-budget-min "$minutes" --kl-warmup-steps 100 --lr-warmup-steps 100 --threads 1 \
    > "$out/$likelihood.log" 2>&1 &
done
wait
.venv/bin/python benchmarks/summarize_runs.py "$out"/*/
