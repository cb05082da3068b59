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
  spec="."
  if [ -n "$extras" ]; then spec=".[${extras}]"; fi  # pip refuses ".[]"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e "$spec"  # set -e: a failed install stops here, loudly
  .venv/bin/python -c "import router, autobahn, twisted, msgpack, yaml" # fail loudly if the install did not work
  touch "$stamp"
fi
