#!/usr/bin/env bash
# Reproduces RESULTS.md, "Certified robustness" (issue 21; docs/method.md section 10): mnist-5k MLP
# and conv VAEs (beta 1, EPOCHS epochs, one run per seed), each certified by center smoothing at
# every sigma, eps 0.1, 0.25, 0.5, latent and recon outputs, with the bracket (the strongest attack
# on the smoothed model) on the first ATTACK_INPUTS inputs. Then prints the tables.
#
#   scripts/certify_study.sh [OUT]                                    # plain models
#   DEFENCE=noise DEFENCE_ARGS="--noise-sigma 0.25" scripts/certify_study.sh OUT   # a training defence
#
# The training defence is passed to `vaelens train --defence $DEFENCE $DEFENCE_ARGS`, so the
# noise-trained rows can be added once that defence exists. Finished steps are skipped on a rerun.
# Heavy: run it under `flock /tmp/vaelens-heavy.lock` on a shared machine.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one thread per process: about 3x faster on a shared machine
OUT=${1:-certify-study}
DEFENCE=${DEFENCE:-none}
DEFENCE_ARGS=${DEFENCE_ARGS:-}
EPOCHS=${EPOCHS:-10}
SEEDS=${SEEDS:-"0 1 2"}
MODELS=${MODELS:-"mlp conv"}
SIGMAS=${SIGMAS:-"0.12 0.25 0.5"}
INPUTS=${INPUTS:-100}
ATTACK_INPUTS=${ATTACK_INPUTS:-20}
STEPS=${STEPS:-5}
N=${N:-2000}
N0=${N0:-100}

for model in $MODELS; do
  for seed in $SEEDS; do
    run="$OUT/runs/${model}_${DEFENCE}_seed${seed}"
    # shellcheck disable=SC2086
    vaelens train --out "$run" --dataset mnist-5k --model "$model" --epochs "$EPOCHS" --seed "$seed" \
      --defence "$DEFENCE" $DEFENCE_ARGS --quiet > /dev/null
    for sigma in $SIGMAS; do
      cert="$run/certify-sigma${sigma}"
      [ -f "$cert/summary.json" ] && continue
      vaelens certify "$run" --sigma "$sigma" --eps 0.1,0.25,0.5 --n "$N" --n0 "$N0" --inputs "$INPUTS" \
        --output latent,recon --attack --attack-inputs "$ATTACK_INPUTS" --steps "$STEPS" --out "$cert" \
        --quiet --overwrite > /dev/null
      echo "done: $cert"
    done
  done
done
python "$(dirname "$0")/certify_table.py" "$OUT"
