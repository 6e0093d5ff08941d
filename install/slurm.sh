#!/bin/bash
# Build Slurm from a source tarball into a prefix of its own (install.sh runs this where Slurm's source
# is beside the checkout, ../shared/vendor/slurm-*.tar.gz, as in this project's CI).
#
#   bash install/slurm.sh TARBALL [PREFIX]      PREFIX defaults to /opt/slurm-<major.minor>
#
# Building takes minutes (about 5 on 2 cores), so the installed tree is kept as a tarball under
# $PVHPC_SLURM_CACHE (default /var/cache/pvhpc/slurm), named by a key of the source's sha256 and the
# configure options: a second run, or a machine that already built this source so, unpacks it in seconds.
# The prefix records its key (.pvhpc-source; pyslurm's wheel is cached by it too); a new source or new
# options build anew. Prints the prefix on its last line.
set -euo pipefail

tarball=${1:?usage: install/slurm.sh TARBALL [PREFIX]}
[ -f "$tarball" ] || { echo "install/slurm.sh: $tarball: no such file" >&2; exit 2; }
version=$(basename "$tarball" .tar.gz | sed -n 's/^slurm-\([0-9][0-9]*\.[0-9][0-9]*\.[0-9][0-9]*\)$/\1/p')
[ -n "$version" ] || { echo "install/slurm.sh: $tarball is not named slurm-X.Y.Z.tar.gz" >&2; exit 2; }
prefix=${2:-/opt/slurm-${version%.*}}
cache_dir=${PVHPC_SLURM_CACHE:-/var/cache/pvhpc/slurm}
# --enable-multiple-slurmd: pvhpc's local cluster runs several slurmd on one host, as Debian's build allows
# (without it slurmctld finds no address for any node but the first of a host). No debug build: it is
# what centers run, and half the size.
OPTIONS=(--prefix="$prefix" --sysconfdir="$prefix/etc" --disable-debug --enable-multiple-slurmd)
sum=$( (sha256sum "$tarball" | cut -d' ' -f1; echo "${OPTIONS[*]}") | sha256sum | cut -c1-40)
cached="$cache_dir/$sum.tar.gz"

# What Slurm's configure finds and the built daemons and tools load: munge (authentication), json-c
# (--json output), http-parser, libjwt and yaml (slurmrestd, --yaml), dbus (cgroup v2). The -dev packages
# bring the libraries too, so they are installed also when the build comes from the cache.
DEPS=(build-essential pkg-config libmunge-dev munge libjson-c-dev libhttp-parser-dev libjwt-dev libdbus-1-dev libyaml-dev)
missing=()
for p in "${DEPS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install/slurm.sh: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$(cat "$prefix/.pvhpc-source" 2>/dev/null)" = "$sum" ] && [ -x "$prefix/sbin/slurmctld" ]; then
    echo "install/slurm.sh: Slurm $version already in $prefix"
elif [ -f "$cached" ]; then
    echo "install/slurm.sh: Slurm $version from $cached"
    rm -rf "$prefix" && mkdir -p "$prefix"
    tar -xzf "$cached" -C "$prefix"
else
    echo "install/slurm.sh: building Slurm $version into $prefix (minutes, once; kept in $cached)"
    started=$(date +%s)
    build=$(mktemp -d /tmp/pvhpc-slurm-build.XXXXXX)
    trap 'rm -rf "$build"' EXIT
    tar -xzf "$tarball" -C "$build"
    src=$(find "$build" -mindepth 1 -maxdepth 1 -type d | head -n 1)
    rm -rf "$prefix"
    # configure's own log stays in the build directory; only its end is shown when it fails.
    (cd "$src" && ./configure -q "${OPTIONS[@]}" >"$build/configure.out" 2>&1) \
        || { tail -n 30 "$src/config.log" >&2; exit 1; }
    make -C "$src" -s -j"$(nproc)" >"$build/make.out" 2>&1 || { tail -n 40 "$build/make.out" >&2; exit 1; }
    make -C "$src" -s install >"$build/install.out" 2>&1 || { tail -n 40 "$build/install.out" >&2; exit 1; }
    echo "$sum" > "$prefix/.pvhpc-source"
    mkdir -p "$cache_dir"
    tar -czf "$cached.partial" -C "$prefix" . && mv "$cached.partial" "$cached"
    echo "install/slurm.sh: built Slurm $version in $(( $(date +%s) - started )) s"
fi
echo "$prefix"
