#!/usr/bin/env bash
# The test suite: set up .venv with the test extra, run pytest on every core. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="test" source scripts/venv.sh
# One worker per core: most tests are single-threaded compiles and subprocess runs.
exec python -m pytest tests -n auto "$@"
