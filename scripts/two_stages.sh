#!/usr/bin/env bash
# Two stages end to end on the embedded digits: pretrain small_cnn at 8x8, then fine-tune it at
# 16x16 with a fresh classification head, initialised from the first run's checkpoint.
#
#   scripts/two_stages.sh [WORKDIR] [STEPS]      (defaults: workdirs/two_stages, 300)
#
# About a minute on a 2-core CPU. Both stages print their test accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR="${1:-workdirs/two_stages}"
STEPS="${2:-300}"
if [ -z "${VIRTUAL_ENV:-}" ]; then EXTRAS="" source scripts/venv.sh; fi

echo "== stage 1: pretrain at 8x8 -> $WORKDIR/pretrain"
python -m jaxlab.train --config=configs/quickstart.py --workdir="$WORKDIR/pretrain" \
  --config.total_steps="$STEPS" --config.eval_every_steps="$STEPS" --config.checkpoint_every_steps="$STEPS"

echo "== stage 2: fine-tune at 16x16 with a new head -> $WORKDIR/finetune"
python -m jaxlab.train --config=configs/finetune_digits.py --workdir="$WORKDIR/finetune" \
  --config.init_from.path="$WORKDIR/pretrain" \
  --config.total_steps="$STEPS" --config.eval_every_steps="$STEPS" --config.checkpoint_every_steps="$STEPS"
