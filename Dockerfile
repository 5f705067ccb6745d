# tidelog broker image.
#
#   docker build -t tidelog .                        (podman: add --format docker to keep the HEALTHCHECK)
#   docker run -d -p 50051:50051 -p 9092:9092 -v tidelog-data:/data -v ./secrets:/secrets:ro \
#       -e TIDELOG_TLS_CERT_FILE=/secrets/server.crt -e TIDELOG_TLS_KEY_FILE=/secrets/server.key \
#       -e TIDELOG_USERS_FILE=/secrets/users.json -e TIDELOG_CA_FILE=/secrets/ca.pem tidelog
#   (listening on 0.0.0.0 it refuses to start without TLS and authentication; -e TIDELOG_INSECURE=1 serves
#   it open, for a network you trust. README: Security, Container)
#
# Stage "build" compiles the Cython core and builds the tidelog wheel (build deps from pyproject's
# build-system, fetched by pip into an isolated environment). The runtime stage installs that wheel and
# its runtime dependencies from PyPI, with no compiler, and runs the broker as a non-root user.
# Any Debian-based CPython >= 3.10 image with pip works as the base: --build-arg BASE_IMAGE=python:3.11-slim
ARG BASE_IMAGE=python:3.12-slim

# ---------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -c "import os, sysconfig; h = os.path.join(sysconfig.get_paths()['include'], 'Python.h'); \
assert os.path.exists(h), 'no ' + h + ': the base image needs the Python headers'"

WORKDIR /src
# Only what the wheel is built from (see .dockerignore): pyproject.toml, setup.py, README.md, native/, src/
COPY . .
# -g0: no debug info in the extensions (setup.py's -O3 still applies); 4x smaller .so files.
RUN CFLAGS="-g0" pip wheel --no-deps -w /wheels . \
 && ls -l /wheels

# ---------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONUNBUFFERED=1 \
    TIDELOG_DATA_DIR=/data \
    TIDELOG_HOST=0.0.0.0 \
    TIDELOG_KAFKA_PORT=9092 \
    TIDELOG_ADVERTISED_HOST=localhost

COPY --from=build /wheels /tmp/wheels
RUN pip install "$(ls /tmp/wheels/tidelog-*.whl)[kafka]" \
 && rm -rf /tmp/wheels /root/.cache \
 && tidelog --version \
 && python3 -c "import tidelog._native.record_batch, tidelog._native.checksum" \
 && groupadd --gid 10001 tidelog \
 && useradd --uid 10001 --gid tidelog --home-dir /data --no-create-home --shell /usr/sbin/nologin tidelog \
 && mkdir -p /data \
 && chown tidelog:tidelog /data \
 && chmod 0750 /data

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# gRPC, metrics, Kafka clients. Kafka clients connect to the host the broker advertises: localhost
# (for -p 9092:9092 on the same machine) unless TIDELOG_ADVERTISED_HOST says otherwise.
EXPOSE 50051 9464 9092

# SERVING only after the engine has opened (and recovered) the log and the port is bound; NOT_SERVING
# as soon as a graceful shutdown starts. Under TLS it reads TIDELOG_CA_FILE (and TIDELOG_SERVER_NAME when
# the certificate does not name 127.0.0.1) from the environment; the health service needs no token.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["tidelog", "health", "--server", "127.0.0.1:50051", "--timeout-ms", "3000"]

# Exec form: tidelog is PID 1 and gets SIGTERM itself; it then drains in-flight calls, flushes and
# closes the log cleanly (writes the clean-shutdown marker) and exits 0. Give it longer than the
# server's shutdown_grace_s (10 s; an open Subscribe stream holds the drain that long) before SIGKILL:
# docker/podman stop -t 20. Extra arguments are appended, e.g. `--fsync always`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tidelog", "serve", "--host", "0.0.0.0", "--data-dir", "/data"]
CMD []
