#!/bin/bash
# Install what pvhpc needs on Debian 12, as root: Debian's Slurm, munge, ParaView, Xvfb,
# Apache, OpenSSH and PostgreSQL; a virtual environment with pvhpc in /opt/pvhpc/venv
# (command linked as /usr/local/bin/pvhpc); wslink for pvpython; and the web clients from npm
# (ParaView Visualizer, wslink's browser client), fetched once with Debian's npm.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")"

PREFIX=${PVHPC_PREFIX:-/opt/pvhpc}
PACKAGES=(
    python3 python3-venv python3-pip ca-certificates procps iproute2 sudo
    slurm-wlm slurm-wlm-basic-plugins munge
    paraview python3-paraview xvfb xauth
    apache2 openssh-server openssh-client postgresql
    chromium npm
)

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (it installs Debian packages)" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
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
ln -sf "$PREFIX/venv/bin/pvhpc" /usr/local/bin/pvhpc
PVHPC_RUNTIME_DIR=${PVHPC_RUNTIME_DIR:-$PREFIX/pvweb-site} PVHPC_WEB_CLIENTS_DIR=${PVHPC_WEB_CLIENTS_DIR:-$PREFIX/web-clients} \
    "$PREFIX/venv/bin/pvhpc" runtime install
echo "install.sh: done (pvhpc $("$PREFIX/venv/bin/python" -c 'import pvhpc; print(pvhpc.__version__)'))"
