# Sourced by quickstart.sh and test.sh: create or reuse .venv and install jaxlab with EXTRAS.
# Re-installs only when setup.cfg changed since the last install (a stamp inside .venv).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  "$PYTHON" -m venv "$ROOT/.venv"
fi
# shellcheck disable=SC1091
source "$ROOT/.venv/bin/activate"
stamp="$ROOT/.venv/.jaxlab-install-${EXTRAS:-base}"
want="$(sha256sum "$ROOT/setup.cfg" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing jaxlab${EXTRAS:+[$EXTRAS]} into .venv (log: .venv/install.log)"
  # Build back-ends print pages of deprecation notices; keep them in the log unless pip fails.
  if ! { python -m pip install --upgrade pip && python -m pip install -e "$ROOT${EXTRAS:+[$EXTRAS]}"; } \
      > "$ROOT/.venv/install.log" 2>&1; then
    tail -n 30 "$ROOT/.venv/install.log"
    echo "error: installing jaxlab failed; the whole log is .venv/install.log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
