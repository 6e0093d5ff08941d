#!/bin/bash
# Install what pvhpc needs on Debian 12, as root: Debian's Slurm, munge, ParaView, Xvfb,
# Apache, OpenSSH and PostgreSQL; a virtual environment with pvhpc in /opt/pvhpc/venv
# (command linked as /usr/local/bin/pvhpc); wslink for pvpython; and the web clients from npm
# (ParaView Visualizer, wslink's browser client), fetched once with npm.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")"

PREFIX=${PVHPC_PREFIX:-/opt/pvhpc}
PACKAGES=(
    python3 python3-venv python3-pip ca-certificates procps iproute2 sudo
    slurm-wlm slurm-wlm-basic-plugins munge
    paraview python3-paraview xvfb xauth
    apache2 openssh-server openssh-client postgresql
    chromium logrotate
    gcc libc6-dev
)

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (it installs Debian packages)" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm fetches the web clients. A machine that already has Node.js from elsewhere has its npm
# (Debian's npm package would conflict with that Node.js); otherwise Debian's is installed.
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "install.sh: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's own Python: the same minor version as pvpython's, so wslink's compiled
# dependencies installed by this venv's pip also load under pvpython.
if ! grep -qs '^home = /usr/bin$' "$PREFIX/venv/pyvenv.cfg"; then
    rm -rf "$PREFIX/venv"
    /usr/bin/python3 -m venv "$PREFIX/venv"
fi
"$PREFIX/venv/bin/pip" install -q --disable-pip-version-check -e ".[test,postgres]"
# pyslurm (scheduler.backend: pyslurm), where its source is beside the checkout, as in CI
# (../shared/vendor, see docs/scheduler.md) and this machine's Slurm is the release it is for.
# It compiles for minutes: the wheel is kept under $WHEELS, named by the source's sha256, so
# later runs reuse it and a new source builds anew. Without the source pvhpc runs on the
# command-line backend; a site installs the pyslurm release matching its own Slurm.
VENDOR="$(pwd)/../shared/vendor"
WHEELS=${PVHPC_WHEEL_CACHE:-/var/cache/pvhpc/wheels}
tarball=$(ls "$VENDOR"/pyslurm-*.tar.gz 2>/dev/null | sort | tail -n 1 || true)
if [ -n "$tarball" ]; then
    slurm_version=$(dpkg-query -W -f='${Version}' slurm-client 2>/dev/null || true)
    pyslurm_version=$(basename "$tarball" .tar.gz | sed 's/^pyslurm-//')
    # pyslurm 22.5.x is for Slurm 22.05.x, and so on.
    wanted=$(echo "$pyslurm_version" | awk -F. '{printf "%s.%02d", $1, $2}')
    if [ "${slurm_version#"$wanted".}" = "$slurm_version" ]; then
        echo "install.sh: $tarball is for Slurm $wanted, this machine has ${slurm_version:-no Slurm}: pyslurm not installed"
    elif ! "$PREFIX/venv/bin/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("pyslurm") is None)' \
            || [ "$(cat "$PREFIX/venv/.pyslurm-source" 2>/dev/null)" != "$(sha256sum "$tarball" | cut -d' ' -f1)" ]; then
        sum=$(sha256sum "$tarball" | cut -d' ' -f1)
        cache="$WHEELS/$sum"
        if ! ls "$cache"/pyslurm-*.whl >/dev/null 2>&1; then
            dpkg-query -W -f='${Status}' libslurm-dev 2>/dev/null | grep -q "install ok installed" || {
                apt-get update -qq
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libslurm-dev gcc python3-dev >/dev/null
            }
            echo "install.sh: building pyslurm $pyslurm_version (several minutes, once; kept in $cache)"
            mkdir -p "$cache"
            SLURM_INCLUDE_DIR=/usr/include SLURM_LIB_DIR=/usr/lib/x86_64-linux-gnu \
                "$PREFIX/venv/bin/pip" wheel -q --disable-pip-version-check --no-deps -w "$cache" "$tarball"
        fi
        "$PREFIX/venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$cache"/pyslurm-*.whl
        echo "$sum" > "$PREFIX/venv/.pyslurm-source"
    fi
fi
ln -sf "$PREFIX/venv/bin/pvhpc" /usr/local/bin/pvhpc
PVHPC_RUNTIME_DIR=${PVHPC_RUNTIME_DIR:-$PREFIX/pvweb-site} PVHPC_WEB_CLIENTS_DIR=${PVHPC_WEB_CLIENTS_DIR:-$PREFIX/web-clients} \
    "$PREFIX/venv/bin/pvhpc" runtime install
echo "install.sh: done (pvhpc $("$PREFIX/venv/bin/python" -c 'import pvhpc; print(pvhpc.__version__)'))"
