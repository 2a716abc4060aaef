#!/usr/bin/env bash
# Install the Debian packages that kubeling's node agent, proxy, ingress and etcd backend need.
# Idempotent and quick: `dpkg -s` first, and `apt-get update` + install only for what is missing.
# Needs root (CI and the dev machines run as root).
set -euo pipefail

PACKAGES=(runc docker-registry busybox-static nginx redis-server iptables nftables etcd-server etcd-client iproute2 wrk curl)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg -s "$pkg" >/dev/null 2>&1; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all present (${PACKAGES[*]})"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing ${missing[*]}; run as root to install them" >&2
    exit 1
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The nginx and docker-registry packages would start system services; kubeling runs its own.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}"
