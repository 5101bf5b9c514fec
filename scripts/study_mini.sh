#!/usr/bin/env bash
# The mini coupling study from a fresh clone: set up .venv (with matplotlib for the figures), run
# configs/bocb/mini_digits.py, write the report. Usage: scripts/study_mini.sh [WORKDIR] [--config.KEY=VALUE ...]
# 144 cells (4 lrs x 3 seeds per backbone/optimizer pair): ~25 min on a busy 2-core CPU
# (docs/study.md, "The mini protocol"); a finished cell is skipped when the command is rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR="workdirs/study_mini"
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then WORKDIR="$1"; shift; fi

EXTRAS="study" source scripts/venv.sh
t0=$(date +%s)
python -m jaxlab.study --config=configs/bocb/mini_digits.py --workdir="$WORKDIR" "$@"
echo "study and report: $(( $(date +%s) - t0 )) s"
