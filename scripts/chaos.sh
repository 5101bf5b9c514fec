#!/usr/bin/env bash
# Fault injection: SIGKILL the quick-start training at random moments, then check that nothing was
# lost (scripts/chaos.py says what is checked). Usage: scripts/chaos.sh [WORKDIR] [--kills=N] [--steps=N] [--seed=S]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
workdir="${1:-workdirs/chaos-$(date +%Y%m%d-%H%M%S)}"
exec python scripts/chaos.py --workdir="$workdir" --kills=20 "${@:2}"
