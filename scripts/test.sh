#!/usr/bin/env bash
# Second command of a fresh clone: set up .venv with the test requirements and run pytest.
# Extra arguments go to pytest (e.g. -m slow for the longer checks).
set -euo pipefail
source "$(dirname "$0")/_venv.sh" requirements-test.txt
exec .venv/bin/python -m pytest -q "$@"
