#!/bin/sh
# Installs the Debian bookworm packages coalescer builds and tests with, when missing.
# Run as root (or with sudo). Idempotent: does nothing when everything is there.
# libhiredis-dev: cluster mode's RESP reader. redis-server: the cluster-mode tests start real
# ones (tests/integration/redis_server.hpp).
set -eu
packages="libboost1.81-dev libboost-json1.81-dev libssl-dev libyaml-cpp-dev libhiredis-dev doctest-dev cmake g++ make openssl ca-certificates redis-server"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
fi
