#!/usr/bin/env bash
# The test suite: set up .venv with the test extra, run pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="test" source scripts/venv.sh
exec python -m pytest tests "$@"
