#!/usr/bin/env bash
# Tokenizer → generator end to end on the embedded digits: train a VQGAN tokenizer (stage 1, and
# the same without k-means init and dead-code restarts, for comparison), then class-conditional
# MaskGIT on its frozen codes (stage 2, initialised from the stage-1 checkpoint), then samples.
#
#   scripts/tokenizer_to_generator.sh [WORKDIR] [TOKENIZER_STEPS] [MASKGIT_STEPS]
#   (defaults: workdirs/tokenizer_to_generator, 400, 600)
#
# Prints the tokenizers' test PSNR/SSIM and codebook usage, MaskGIT's masked-code accuracy, and
# where the sample PNGs are. Measured time on a 2-core CPU: see configs/tokenizer_digits.py.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR="${1:-workdirs/tokenizer_to_generator}"
TOKENIZER_STEPS="${2:-400}"
MASKGIT_STEPS="${3:-600}"
if [ -z "${VIRTUAL_ENV:-}" ]; then EXTRAS="" source scripts/venv.sh; fi
every() { echo "--config.eval_every_steps=$1 --config.checkpoint_every_steps=$1 --config.total_steps=$1"; }

echo "== stage 1: VQGAN tokenizer (k-means init, dead-code restarts) -> $WORKDIR/tokenizer"
python -m jaxlab.train --config=configs/tokenizer_digits.py --workdir="$WORKDIR/tokenizer" \
  $(every "$TOKENIZER_STEPS")

echo "== stage 1 without k-means init and restarts -> $WORKDIR/tokenizer_no_restart"
python -m jaxlab.train --config=configs/tokenizer_digits.py:no_restart \
  --workdir="$WORKDIR/tokenizer_no_restart" $(every "$TOKENIZER_STEPS")

echo "== stage 2: MaskGIT on the frozen tokenizer -> $WORKDIR/maskgit"
python -m jaxlab.train --config=configs/maskgit_digits.py:"$WORKDIR/tokenizer" \
  --workdir="$WORKDIR/maskgit" $(every "$MASKGIT_STEPS")

echo "== samples"
python -m jaxlab.generate --config=configs/maskgit_digits.py:"$WORKDIR/tokenizer" \
  --workdir="$WORKDIR/maskgit" --out="$WORKDIR/samples"

echo "== results (test split)"
python - "$WORKDIR" <<'PY'
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
def last_eval(run):
  rows = [json.loads(l) for l in (root / run / "metrics.jsonl").read_text().splitlines() if l.strip()]
  return [r for r in rows if any(k.startswith("eval/") for k in r)][-1]
for run in ("tokenizer", "tokenizer_no_restart"):
  r = last_eval(run)
  print(f"{run:22s} PSNR {r['eval/psnr']:.2f} dB  SSIM {r['eval/ssim']:.3f}  "
        f"codebook usage {100 * r['eval/codebook_usage']:.1f}%  perplexity {r['eval/codebook_perplexity']:.1f}")
r = last_eval("maskgit")
print(f"{'maskgit':22s} masked-code accuracy {r['eval/masked_accuracy']:.3f}  loss {r['eval/loss']:.3f}")
print(f"samples: {root / 'samples' / 'grid.png'}")
PY
