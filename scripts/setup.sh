#!/usr/bin/env bash
# Installs everything vnet-cni needs on a fresh Debian 12 machine (run as root):
# the Debian packages, a virtualenv in .venv, and vnet-cni itself with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(python3 python3-venv python3-dev gcc libc6-dev iproute2 iptables nftables tcpdump bridge-utils
          iputils-ping containernetworking-plugins podman runc busybox-static containerd
          git mmdebstrap)  # git + mmdebstrap: scripts/build-image.sh (the e2e tests build the image)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating virtualenv .venv"
    /usr/bin/python3 -m venv .venv
fi
echo "setup: installing vnet-cni into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# kube-proxy's rules see bridged pod traffic only through br_netfilter (the simulated nodes and the
# Services tests need it). Loading it changes no setting: each namespace keeps its own sysctls.
if [ ! -d /proc/sys/net/bridge ]; then
    echo "setup: loading the br_netfilter kernel module"
    modprobe br_netfilter || echo "setup: warning: cannot load br_netfilter; Services tests will fail" >&2
fi
echo "setup: done"
