#!/usr/bin/env bash
# Install the peers benchmarks/grpc_bench.py measures tidelog against: Debian's redis-server and the
# redis-py client with hiredis. Idempotent: does nothing (and exits 0) when both are already there.
#
#     bash benchmarks/setup_peers.sh
#
# Needs root (or sudo) for apt-get; the Python packages go into the interpreter that runs the
# benchmark (override with PYTHON=/path/to/python).
set -euo pipefail

PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    PYTHON=python
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    fi
fi

if command -v redis-server >/dev/null 2>&1; then
    echo "redis-server: already installed ($(redis-server --version | head -n1))"
else
    echo "redis-server: installing with apt-get"
    # Wait for a concurrent apt/dpkg (another session, unattended upgrades) instead of failing at once.
    $SUDO apt-get -o DPkg::Lock::Timeout=300 update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y \
        --no-install-recommends redis-server
    # The Debian package may start a system-wide redis on 6379; the benchmark starts its own on a
    # free port and never touches that one.
fi

if "$PYTHON" -c "import redis, hiredis" >/dev/null 2>&1; then
    echo "redis-py + hiredis: already installed ($("$PYTHON" -c 'import redis, hiredis; print("redis", redis.__version__, "hiredis", hiredis.__version__)'))"
else
    echo "redis-py + hiredis: installing with pip"
    "$PYTHON" -m pip install --quiet redis hiredis
fi

command -v redis-server >/dev/null 2>&1
"$PYTHON" -c "import redis, hiredis"
echo "peers ready"
