#!/bin/bash
# Install pyslurm built against one Slurm into a virtual environment of its own (install.sh runs it).
#
#   bash install/pyslurm.sh VENV SOURCE SLURM_PREFIX CACHE_KEY
#
# SOURCE is a pyslurm source tarball or a pip requirement (pyslurm==25.11.2); SLURM_PREFIX the Slurm it is
# built against (headers in SLURM_PREFIX/include, libslurm in SLURM_PREFIX/lib or Debian's multiarch
# directory). pyslurm X.Y builds and runs only against Slurm X.Y, and one environment holds one pyslurm,
# so each Slurm gets an environment of its own; pvhpc's pyslurm backend runs its workers with that
# environment's python (scheduler.pyslurm_python, docs/scheduler.md).
# Compiling takes minutes: the wheel is kept under $PVHPC_WHEEL_CACHE/CACHE_KEY (CACHE_KEY names both the
# pyslurm source and the Slurm it was built against) and installed from there on later runs.
set -euo pipefail

venv=${1:?usage: install/pyslurm.sh VENV SOURCE SLURM_PREFIX CACHE_KEY}
source=${2:?usage: install/pyslurm.sh VENV SOURCE SLURM_PREFIX CACHE_KEY}
slurm=${3:?usage: install/pyslurm.sh VENV SOURCE SLURM_PREFIX CACHE_KEY}
key=${4:?usage: install/pyslurm.sh VENV SOURCE SLURM_PREFIX CACHE_KEY}
cache="${PVHPC_WHEEL_CACHE:-/var/cache/pvhpc/wheels}/$key"

[ -f "$slurm/include/slurm/slurm.h" ] || { echo "install/pyslurm.sh: no Slurm headers in $slurm/include/slurm" >&2; exit 2; }
libdir="$slurm/lib"
[ -e "$libdir/libslurm.so" ] || libdir="$slurm/lib/$(gcc -print-multiarch)"
[ -e "$libdir/libslurm.so" ] || { echo "install/pyslurm.sh: no libslurm.so under $slurm/lib" >&2; exit 2; }

if [ "$(cat "$venv/.pyslurm-source" 2>/dev/null)" = "$key" ] && [ -x "$venv/bin/python" ]; then
    echo "install/pyslurm.sh: pyslurm for $slurm already in $venv"
    exit 0
fi
# Debian's own Python, as pvhpc's environment: the worker runs nothing of pvhpc's but its one file.
grep -qs '^home = /usr/bin$' "$venv/pyvenv.cfg" || { rm -rf "$venv"; /usr/bin/python3 -m venv "$venv"; }
if ! ls "$cache"/pyslurm-*.whl >/dev/null 2>&1; then
    echo "install/pyslurm.sh: building pyslurm ($source) against $slurm (minutes, once; kept in $cache)"
    started=$(date +%s)
    mkdir -p "$cache.partial"
    # --no-cache-dir: pip's own wheel cache knows the source, not the Slurm it was built against.
    SLURM_INCLUDE_DIR="$slurm/include" SLURM_LIB_DIR="$libdir" \
        "$venv/bin/pip" wheel -q --disable-pip-version-check --no-cache-dir --no-deps -w "$cache.partial" "$source"
    rm -rf "$cache" && mv "$cache.partial" "$cache"
    echo "install/pyslurm.sh: built in $(( $(date +%s) - started )) s"
fi
"$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$cache"/pyslurm-*.whl
echo "$key" > "$venv/.pyslurm-source"
echo "install/pyslurm.sh: $("$venv/bin/python" -c 'import importlib.metadata as m; print("pyslurm", m.version("pyslurm"))') in $venv"
