# Shared by demo.sh and test.sh: create .venv if missing and install what it lacks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
req=${1:-requirements.txt}
stamp=".venv/.installed-$(basename "$req")-$(cat requirements*.txt pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
    touch "$stamp"
fi
