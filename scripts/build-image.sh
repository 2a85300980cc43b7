#!/usr/bin/env bash
# Build the vnet-cni node image offline from this checkout (run as root).
#
#   scripts/build-image.sh [--tag TAG] [--archive FILE | --no-archive] [--storage DIR]
#                          [--cache-dir DIR] [--refresh-base]
#
# 1. base: a minimal Debian 12 root filesystem (mmdebstrap --variant=essential with python3,
#    iproute2, iptables, ca-certificates; no docs, man pages or locales), cached OUTSIDE the checkout
#    in <cache-dir>/base-<hash of the package list and options>.tar and imported with `podman import`;
# 2. wheels: vnet-cni and its dependencies built with `pip wheel` from a clean export of the tree
#    (git ls-files copied into a temporary directory: nothing is ever built inside the checkout);
#    dependency wheels are cached in <cache-dir>/wheels, so a rebuild needs no network;
# 3. front doors: src/vnetcni/plugins/front_door.c compiled statically (gcc -static), shipped in the
#    image under /opt/vnet-cni/cni-bin for the DaemonSet's install-cni init container;
# 4. `podman build --pull=never --network none` from the Containerfile (wheels installed with
#    --no-index into the virtualenv /opt/vnet-cni);
# 5. outputs: the image in podman storage (tag localhost/vnet-cni:<version> unless --tag) and an OCI
#    archive (`podman save --format oci-archive`) that `ctr -n k8s.io images import` loads.
#
# podman runs with a private CONTAINERS_CONF and CONTAINERS_STORAGE_CONF (graphroot under
# --storage, default /var/lib/vnet-cni/image-storage): the machine's podman configuration and
# storage are never touched. Environment equivalents: VNET_IMAGE_TAG, VNET_IMAGE_ARCHIVE,
# VNET_IMAGE_STORAGE, VNET_IMAGE_CACHE. The last line printed is a summary: tag, archive, sizes, time.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/src/vnetcni/__init__.py")"
tag="${VNET_IMAGE_TAG:-localhost/vnet-cni:$version}"
cache="${VNET_IMAGE_CACHE:-/var/cache/vnet-cni}"
storage="${VNET_IMAGE_STORAGE:-/var/lib/vnet-cni/image-storage}"
archive="${VNET_IMAGE_ARCHIVE-}"
want_archive=1
refresh_base=0

die() { echo "build-image: $*" >&2; exit 1; }
steps=""
mark=$(date +%s.%N)
step() {  # step NAME: record the seconds since the previous step
    local now; now=$(date +%s.%N)
    steps="$steps $1=$(awk -v a="$mark" -v b="$now" 'BEGIN { printf "%.1fs", b - a }')"
    mark=$now
}
while (($#)); do
    case "$1" in
        --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
        --archive) archive="${2:?--archive needs a value}"; shift 2 ;;
        --no-archive) want_archive=0; shift ;;
        --storage) storage="${2:?--storage needs a value}"; shift 2 ;;
        --cache-dir) cache="${2:?--cache-dir needs a value}"; shift 2 ;;
        --refresh-base) refresh_base=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap and podman need it)"
for tool in mmdebstrap podman gcc readelf git tar sha256sum flock; do
    command -v "$tool" >/dev/null || die "$tool is not installed (scripts/setup.sh installs it)"
done
[ -n "$version" ] || die "cannot read __version__ from src/vnetcni/__init__.py"
case "$storage" in /*) ;; *) storage="$PWD/$storage" ;; esac
case "$cache" in /*) ;; *) cache="$PWD/$cache" ;; esac
[ -n "$archive" ] || archive="$cache/vnet-cni-$version.oci.tar"
case "$archive" in /*) ;; *) archive="$PWD/$archive" ;; esac
case "$storage/" in "$repo"/*) die "--storage must be outside the checkout" ;; esac
case "$cache/" in "$repo"/*) die "--cache-dir must be outside the checkout" ;; esac

python="$repo/.venv/bin/python"
[ -x "$python" ] || python="$(command -v python3)"
started=$(date +%s.%N)
work="$(mktemp -d /tmp/vnet-image.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$cache" "$storage/graphroot" "$storage/runroot"
# one build at a time per storage (parallel test sessions share the cache and the storage)
exec 9>"$storage/.build.lock"
flock -w 900 9 || die "another build-image.sh has held $storage/.build.lock for 15 minutes"

# --- a podman of our own -------------------------------------------------------------------
cat >"$storage/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[network]
network_backend = "cni"
EOF
cat >"$storage/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$storage/graphroot"
runroot = "$storage/runroot"
EOF
export CONTAINERS_CONF="$storage/containers.conf" CONTAINERS_STORAGE_CONF="$storage/storage.conf"
pm() { podman "$@"; }

# --- 1. the base root filesystem, cached by what goes into it ------------------------------------
suite=bookworm
packages=(python3 iproute2 iptables ca-certificates)
mirrors=("deb http://deb.debian.org/debian $suite main"
         "deb http://deb.debian.org/debian $suite-updates main"
         "deb http://deb.debian.org/debian-security $suite-security main")
debstrap_opts=(--variant=essential "--include=$(IFS=,; echo "${packages[*]}")"
               --aptopt='APT::Install-Recommends "false"'
               --dpkgopt='path-exclude=/usr/share/man/*'
               --dpkgopt='path-exclude=/usr/share/info/*'
               --dpkgopt='path-exclude=/usr/share/locale/*'
               --dpkgopt='path-exclude=/usr/share/doc/*'
               --dpkgopt='path-include=/usr/share/doc/*/copyright'
               --dpkgopt='path-exclude=/usr/share/lintian/*'
               --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*'
               --customize-hook='find "$1"/usr/lib/python3* -depth -type d -name test -path "*python3.*/test" -exec rm -rf {} +')
key="$(printf '%s\n' "$suite" "${packages[@]}" "${mirrors[@]}" "${debstrap_opts[@]}" | sha256sum | cut -c1-16)"
base_tar="$cache/base-$key.tar"
base_tag="localhost/vnet-cni-base:$key"
if [ "$refresh_base" = 1 ] || [ ! -s "$base_tar" ]; then
    echo "build-image: building the base root filesystem (mmdebstrap, about a minute)"
    SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(date +%s)}" mmdebstrap --quiet "${debstrap_opts[@]}" \
        "$suite" "$work/base.tar" "${mirrors[@]}"
    mv "$work/base.tar" "$base_tar.tmp" && mv "$base_tar.tmp" "$base_tar"
    pm rmi -f "$base_tag" >/dev/null 2>&1 || true
fi
if ! pm image exists "$base_tag"; then
    echo "build-image: importing $base_tar as $base_tag"
    pm import --quiet "$base_tar" "$base_tag" >/dev/null
fi

step base
# --- 2. wheels from a clean export of the tree ----------------------------------------------------
ctx="$work/context"
mkdir -p "$ctx/src" "$ctx/wheels" "$ctx/cni-bin" "$cache/wheels"
# tracked and new (not ignored) files as they are in the working tree; never .venv, build/, caches
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"; done | tar --null -T - -cf -) | tar -C "$ctx/src" -xf -
# what the image is made of: this tree, the Containerfile, the base; an image already built from
# exactly that (its label) is reused, so a session that asks again gets it in a second or two
src_key="$( (cd "$ctx/src" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; echo "$key") \
    | sha256sum | cut -c1-16)"
built_key="$(pm image inspect --format '{{index .Labels "io.vnet-cni.source"}}' "$tag" 2>/dev/null || true)"
if [ "$built_key" = "$src_key" ]; then
    echo "build-image: $tag is already built from this tree ($src_key)"
else
echo "build-image: building wheels"
# vnet-cni itself; then its dependencies (and pip, which installs them in the image) from the
# wheel cache, reaching the package index only for what the cache lacks
"$python" -m pip wheel -q --no-deps --no-build-isolation -w "$ctx/wheels" "$ctx/src" 2>"$work/pip.log" \
    || "$python" -m pip wheel -q --no-deps -w "$ctx/wheels" "$ctx/src" 2>>"$work/pip.log" \
    || { cat "$work/pip.log" >&2; die "pip wheel failed for vnet-cni"; }
wheel="$(ls "$ctx"/wheels/vnetcni-*.whl)"
deps=("$wheel" pip)
if ! "$python" -m pip wheel -q --no-index --find-links "$cache/wheels" -w "$ctx/wheels" "${deps[@]}" 2>>"$work/pip.log"; then
    "$python" -m pip wheel -q --find-links "$cache/wheels" -w "$cache/wheels" "${deps[@]}" 2>>"$work/pip.log" \
        || { cat "$work/pip.log" >&2; die "pip wheel failed for the dependencies"; }
    rm -f "$cache"/wheels/vnetcni-*.whl
    "$python" -m pip wheel -q --no-index --find-links "$cache/wheels" -w "$ctx/wheels" "${deps[@]}"
fi
ls "$ctx"/wheels/*.whl | grep -v '/vnetcni-\|/pip-' | grep -q . || die "no dependency wheels were built"

step wheels
# --- 3. static front doors ------------------------------------------------------------------------
# compiled by the exported tree's own compile_front_door (one place decides the defines) as
# no-fallback builds, with -static: the host needs neither a loader nor Python, and every call
# goes to vnetd (ADD fails fast with code 11 naming vnetd's socket while no vnetd answers).
for plugin in vnet vnet-ipam; do
    PYTHONPATH="$ctx/src/src" "$python" -S -c '
import sys
from pathlib import Path
from vnetcni.plugins.install import compile_front_door
compile_front_door(sys.argv[1], None, Path(sys.argv[2]), "gcc", ("-static", "-s"))
' "$plugin" "$ctx/cni-bin/$plugin" || die "compiling the $plugin front door failed"
    if LC_ALL=C readelf -lW "$ctx/cni-bin/$plugin" | grep -q 'INTERP'; then
        die "the $plugin front door is not statically linked (is libc6-dev installed?)"
    fi
done

step front_doors
# --- 4. the image ---------------------------------------------------------------------------------
cp "$repo/Containerfile" "$ctx/Containerfile"
echo "build-image: podman build $tag"
pm build --quiet --pull=never --network none --layers=false --build-arg "BASE=$base_tag" \
    --build-arg "VERSION=$version" --label "io.vnet-cni.source=$src_key" -t "$tag" -f "$ctx/Containerfile" \
    "$ctx" >/dev/null
pm image prune -f >/dev/null 2>&1 || true
fi

step podman_build
# --- 5. the OCI archive ---------------------------------------------------------------------------
size_img="$(pm image inspect --format '{{.Size}}' "$tag")"
summary="tag=$tag image_bytes=$size_img"
if [ "$want_archive" = 1 ]; then
    mkdir -p "$(dirname "$archive")"
    if [ ! -s "$archive" ] || [ "$(cat "$archive.source" 2>/dev/null)" != "$tag $src_key" ]; then
        rm -f "$archive.tmp" "$archive.source"
        pm save --quiet --format oci-archive -o "$archive.tmp" "$tag"
        mv "$archive.tmp" "$archive"
        echo "$tag $src_key" >"$archive.source"
    fi
    summary="$summary archive=$archive archive_bytes=$(stat -c %s "$archive")"
fi
[ "$want_archive" = 1 ] && step oci_archive
elapsed=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "build-image: steps:$steps"
echo "build-image: built $summary seconds=$elapsed"
