#!/bin/bash
# Install what pvhpc needs on Debian 12, as root: Debian's Slurm, munge, ParaView, Xvfb,
# Lmod (environment modules: the tests load ParaView's versions with it, as centers do), Apache,
# OpenSSH and PostgreSQL; a virtual environment with pvhpc in /opt/pvhpc/venv (command linked as
# /usr/local/bin/pvhpc); where their sources are beside the checkout, Slurm 25.11 built from source
# and pyslurm for each Slurm (install/); wslink for pvpython; and the web clients from npm (ParaView
# Visualizer, wslink's browser client), fetched once with npm.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")"

PREFIX=${PVHPC_PREFIX:-/opt/pvhpc}
PACKAGES=(
    python3 python3-venv python3-pip ca-certificates procps iproute2 sudo
    slurm-wlm slurm-wlm-basic-plugins munge
    paraview python3-paraview xvfb xauth xdotool
    lmod
    apache2 openssh-server openssh-client postgresql
    chromium logrotate
    gcc libc6-dev python3-dev
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
VENDOR="$(pwd)/../shared/vendor"
# pyslurm (scheduler.backend: pyslurm) for each Slurm here that has one, each in an environment of its own,
# $PREFIX/pyslurm-RELEASE: pyslurm X.Y builds and runs only against Slurm X.Y, and one environment holds one
# pyslurm (scheduler.pyslurm_python names it; docs/scheduler.md). The wheels compile for minutes on one core
# each and are kept in /var/cache/pvhpc/wheels (install/pyslurm.sh). So they build in the background, beside
# Slurm's own build and the runtime's downloads, and install.sh waits for them at its end (the Debian packages
# they need are installed before: apt takes one caller at a time). Without any, pvhpc runs on the
# command-line backend.
BACKGROUND=()
in_background() {   # in_background NAME COMMAND...: run it, its output kept for wait_for_background
    local log
    log=$(mktemp /tmp/pvhpc-install.XXXXXX)
    "${@:2}" >"$log" 2>&1 &
    BACKGROUND+=("$!:$log:$1")
}
wait_for_background() {
    local job pid log name status failed=0
    for job in "${BACKGROUND[@]}"; do
        IFS=: read -r pid log name <<<"$job"
        status=0
        wait "$pid" || status=$?
        cat "$log" && rm -f "$log"
        [ "$status" -eq 0 ] || { echo "install.sh: $name failed (exit $status)" >&2; failed=1; }
    done
    BACKGROUND=()
    return "$failed"
}
# A step that fails in the foreground (set -e) still waits for the builds under way and says how they ended.
trap 'wait_for_background || true' EXIT
# Debian's 22.05: pyslurm from its source beside the checkout (PyPI has none for 22.05), if it is the release
# for Debian's Slurm.
tarball=$(ls "$VENDOR"/pyslurm-*.tar.gz 2>/dev/null | sort -V | tail -n 1 || true)
if [ -n "$tarball" ]; then
    slurm_version=$(dpkg-query -W -f='${Version}' slurm-client 2>/dev/null || true)
    pyslurm_version=$(basename "$tarball" .tar.gz | sed 's/^pyslurm-//')
    # pyslurm 22.5.x is for Slurm 22.05.x, and so on.
    wanted=$(echo "$pyslurm_version" | awk -F. '{printf "%s.%02d", $1, $2}')
    if [ "${slurm_version#"$wanted".}" = "$slurm_version" ]; then
        echo "install.sh: $tarball is for Slurm $wanted, Debian's is ${slurm_version:-not installed}: pyslurm not installed"
    else
        dpkg-query -W -f='${Status}' libslurm-dev 2>/dev/null | grep -q "install ok installed" || {
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libslurm-dev >/dev/null
        }
        in_background "pyslurm for Slurm $wanted" bash install/pyslurm.sh "$PREFIX/pyslurm-$wanted" "$tarball" /usr \
            "$(sha256sum "$tarball" | cut -d' ' -f1)"
    fi
fi
# Slurm 25.11 from source, where its source is beside the checkout (../shared/vendor, as in CI): built once
# into /opt/slurm-25.11 and kept in /var/cache/pvhpc/slurm (install/slurm.sh). pvhpc's local cluster then
# runs on it by default, Debian's 22.05 being the second choice (pvhpc cluster start --slurm 22.05). Its
# pyslurm comes from PyPI, the release pinned here for it.
declare -A PYSLURM_FROM_PYPI=([25.11]=25.11.2)
slurm_tarball=$(ls "$VENDOR"/slurm-*.tar.gz 2>/dev/null | sort -V | tail -n 1 || true)
if [ -n "$slurm_tarball" ]; then
    built=$(bash install/slurm.sh "$slurm_tarball" | tee /dev/stderr | tail -n 1)
    release=$(basename "$slurm_tarball" .tar.gz | sed 's/^slurm-//' | cut -d. -f1,2)
    pin=${PYSLURM_FROM_PYPI[$release]:-}
    if [ -n "$pin" ]; then
        in_background "pyslurm for Slurm $release" bash install/pyslurm.sh "$PREFIX/pyslurm-$release" \
            "pyslurm==$pin" "$built" "slurm-$(cat "$built/.pvhpc-source")-pyslurm-$pin"
    else
        echo "install.sh: no pyslurm release is pinned for Slurm $release: its pyslurm not installed"
    fi
fi
ln -sf "$PREFIX/venv/bin/pvhpc" /usr/local/bin/pvhpc
PVHPC_RUNTIME_DIR=${PVHPC_RUNTIME_DIR:-$PREFIX/pvweb-site} PVHPC_WEB_CLIENTS_DIR=${PVHPC_WEB_CLIENTS_DIR:-$PREFIX/web-clients} \
    "$PREFIX/venv/bin/pvhpc" runtime install
wait_for_background || exit 1
# Earlier installs put pyslurm into pvhpc's own environment; it lives in the environments above now.
if [ -f "$PREFIX/venv/.pyslurm-source" ]; then
    "$PREFIX/venv/bin/pip" uninstall -q -y pyslurm && rm -f "$PREFIX/venv/.pyslurm-source"
fi
echo "install.sh: done (pvhpc $("$PREFIX/venv/bin/python" -c 'import pvhpc; print(pvhpc.__version__)'))"
