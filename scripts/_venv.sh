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
# The native C runtime (csrc/): compiled once per source version into build/native/; without a
# C compiler this only prints a note and everything runs on the numpy engine.
.venv/bin/python -m ifq_tinier_yolo.native.build >/dev/null || echo "note: the numpy engine will run instead" >&2
