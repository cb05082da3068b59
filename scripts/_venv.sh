# Sourced by scripts/run, scripts/test and scripts/bench: make .venv and install the package with the
# given extras, skipping pip when nothing it reads has changed since the last install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
extras="$1"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(cat setup.cfg pyproject.toml | sha1sum | cut -c1-12)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -m pip install -q -e ".[${extras}]" 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c "import router, autobahn, twisted, msgpack, yaml" # fail loudly if the install did not work
  touch "$stamp"
fi
