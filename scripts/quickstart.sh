#!/usr/bin/env bash
# Quick start: set up .venv, train configs/quickstart.py on the embedded digits, evaluate.
# Usage: scripts/quickstart.sh [WORKDIR] [--config.KEY=VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR="workdirs/quickstart"
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then WORKDIR="$1"; shift; fi

t0=$(date +%s)
EXTRAS="" source scripts/venv.sh
t1=$(date +%s)
echo "install: $((t1 - t0)) s"

python -m jaxlab.train --config=configs/quickstart.py --workdir="$WORKDIR" "$@"
t2=$(date +%s)
echo "training and evaluation: $((t2 - t1)) s"
