#!/usr/bin/env bash
# The training-length study of RESULTS.md (issue 12): beta curve, mixup and adversarial training on
# mnist-5k, each trained once for 100 epochs and evaluated at epochs 5, 10, 20, 50 and 100; then mixup
# with the released code's latent target (sample) at 100 epochs; then both reports.
#   bash scripts/training_length_study.sh [OUT] [SEEDS] [N]
# Each sweep resumes where it stopped: running the script again finishes what is missing. Set CHUNK
# (seconds) to run each sweep in chunks that stop and resume, so other heavy jobs can interleave.
set -euo pipefail
OUT=${1:-runs/study12}
SEEDS=${2:-0,1,2}
N=${3:-1000}
CHUNK=${CHUNK:-0}
LOCK=${LOCK:-/tmp/vaelens-heavy.lock}
common=(--dataset mnist-5k --model mlp --latent-dim 16 --betas 0.5,1,2,4,8 --mixup-betas 1 --seeds "$SEEDS"
        --epochs 100 --cosine-t-max 200 --n "$N" --eps 0.5,1 --steps 50 --jobs 2 --quiet)
sweep() {  # run one sweep to the end, in chunks of CHUNK seconds when CHUNK > 0
  if [ "$CHUNK" -gt 0 ]; then
    local tries=0
    until flock "$LOCK" timeout -s INT "$CHUNK" vaelens sweep "$@"; do
      tries=$((tries + 1))
      [ "$tries" -lt 20 ] || { echo "sweep did not finish after $tries chunks" >&2; return 1; }
      sleep 5
    done
  else
    flock "$LOCK" vaelens sweep "$@"
  fi
}
sweep "${common[@]}" --defences none,mixup,adversarial --eval-epochs 5,10,20,50 --out "$OUT/length"
sweep "${common[@]}" --betas 1 --defences mixup --mixup-target sample --out "$OUT/mixup-sample"
vaelens report "$OUT/length"
vaelens report "$OUT/mixup-sample"
