#!/usr/bin/env bash
# Install the peers the benchmarks measure tidelog against: Debian's redis-server (grpc_bench.py,
# groups_bench.py, the suite), nats-server and rabbitmq-server (the suite, `python -m benchmarks`; each is
# optional: the suite skips a peer it cannot set up), and the Python clients (redis-py + hiredis, nats-py,
# pika) plus matplotlib for the suite's chart. Idempotent: installs only what is missing.
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

# Optional peers of the suite. Debian's packages may start system-wide services (nats on 4222, RabbitMQ
# on 5672); the suite starts its own on free 127.0.0.1 ports and never touches those.
for pkg in nats-server rabbitmq-server; do
    if dpkg -s "$pkg" >/dev/null 2>&1; then
        echo "$pkg: already installed"
    else
        echo "$pkg: installing with apt-get (optional: the suite skips it if this fails)"
        $SUDO apt-get -o DPkg::Lock::Timeout=300 update || true
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y \
            --no-install-recommends "$pkg" || echo "$pkg: not installed (the suite will skip it)"
    fi
done

if "$PYTHON" -c "import nats, pika, matplotlib" >/dev/null 2>&1; then
    echo "nats-py + pika + matplotlib: already installed"
else
    echo "nats-py + pika + matplotlib: installing with pip"
    "$PYTHON" -m pip install --quiet nats-py pika matplotlib
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
