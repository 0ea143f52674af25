#!/usr/bin/env bash
# The mixup-against-beta experiment of RESULTS.md (docs/method.md section 6), on mnist-5k:
# MLP VAEs with the same epochs and seed: beta = 1, beta = 1 with mixup, beta = 2, 4, 8;
# then `vaelens compare` on 1,000 test images with attacks at L2 eps = 1. Run once per seed.
#   bash scripts/mixup_experiment.sh [SEED] [EPOCHS] [OUT]
set -euo pipefail
seed=${1:-0}
epochs=${2:-30}
out=${3:-runs/mixup-experiment}/seed$seed
common=(--dataset mnist-5k --model mlp --latent-dim 16 --epochs "$epochs" --seed "$seed" --quiet)
vaelens train "${common[@]}" --beta 1 --out "$out/beta1" > /dev/null
vaelens train "${common[@]}" --beta 1 --mixup --out "$out/beta1-mixup" > /dev/null
for beta in 2 4 8; do
  vaelens train "${common[@]}" --beta "$beta" --out "$out/beta$beta" > /dev/null
done
vaelens compare "$out/beta1" "$out/beta1-mixup" "$out/beta2" "$out/beta4" "$out/beta8" \
  --n 1000 --eps 1.0 --steps 50 --seed "$seed" --out "$out/compare" --quiet
