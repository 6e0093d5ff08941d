#!/bin/bash
# Run pvhpc's whole test suite on this machine, real components included:
# install what is missing, then pytest. Extra arguments go to pytest
# (e.g. -m "not cluster" for the fast tests only).
set -uo pipefail
cd "$(dirname "$0")/.."

bash install.sh || exit 1
# Everything a test needs is installed now: a test may skip for a missing tool only outside this script.
export PVHPC_TESTS_AFTER_INSTALL=1
PY=${PVHPC_PREFIX:-/opt/pvhpc}/venv/bin/python
"$PY" -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "tests/run.sh: pytest collected no tests for these arguments"
    exit 0
fi
exit "$rc"
