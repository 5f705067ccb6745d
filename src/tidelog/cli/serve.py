"""`tidelog serve`: run the broker. Settings: flags > TIDELOG_* environment > --config TOML > defaults.

Once it serves, it prints one line on stdout saying where (`tidelog serving address=HOST:PORT
metrics_address=HOST:PORT`, or a JSON object with those fields under --log-format json) and, when
asked, writes the ports to files: with --port 0 the operating system picks a free port, and whoever
started the broker learns it without guessing one in advance (guessing races with every other
program on the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from ..config import FSYNC_POLICIES
from .failures import CommandError, UsageError
from .parsing import add_command
from .values import metrics_port_number, port_number

ENV_SETTINGS = {
    "TIDELOG_HOST": "host",
    "TIDELOG_PORT": "port",
    "TIDELOG_DATA_DIR": "data_dir",
    "TIDELOG_METRICS_PORT": "metrics_port",
    "TIDELOG_CLUSTER": "cluster",
    "TIDELOG_BROKER_ID": "broker_id",
    "TIDELOG_KAFKA_PORT": "kafka_port",
    "TIDELOG_ADVERTISED_HOST": "advertised_host",
    "TIDELOG_TLS_CERT_FILE": "tls_cert_file",
    "TIDELOG_TLS_KEY_FILE": "tls_key_file",
    "TIDELOG_TLS_CLIENT_CA_FILE": "tls_client_ca_file",
    "TIDELOG_USERS_FILE": "users_file",
    "TIDELOG_INSECURE": "insecure",
    "TIDELOG_ACLS_FILE": "acls_file",
    "TIDELOG_SUPERUSERS": "superusers",
    "TIDELOG_ETCD_USERS": "etcd_users",
    "TIDELOG_ETCD_ACLS": "etcd_acls",
    "TIDELOG_TLS_CA_FILE": "tls_ca_file",
    "TIDELOG_BROKER_TOKEN_FILE": "broker_token_file",
}
ENV_ENGINE_SETTINGS = {"TIDELOG_FSYNC": "fsync"}
INTEGER_SETTINGS = ("port", "metrics_port", "broker_id", "kafka_port")
SECURITY_SETTINGS = (
    "tls_cert_file",
    "tls_key_file",
    "tls_client_ca_file",
    "users_file",
    "acls_file",
    "superusers",
    "insecure",
    "etcd_users",
    "etcd_acls",
    "tls_ca_file",
    "broker_token_file",
)
FLAG_SETTINGS = ("insecure", "etcd_users", "etcd_acls")


def register(commands) -> None:
    serve = add_command(
        commands,
        "serve",
        "run the broker (gRPC) on a local data directory",
        "Run the broker. Settings: flags > TIDELOG_* environment > --config TOML file > defaults. "
        "Once it serves it prints `tidelog serving address=HOST:PORT [metrics_address=HOST:PORT] "
        "[kafka_address=HOST:PORT]` "
        "on stdout (with --log-format json: a JSON object with event, address, metrics_address).",
    )
    serve.add_argument("--data-dir", help="data directory (default: $TIDELOG_DATA_DIR, else ./data)")
    serve.add_argument("--host", help="address to listen on (default: $TIDELOG_HOST, else 127.0.0.1)")
    serve.add_argument(
        "--port", type=port_number, help="gRPC port; 0: any free port (default: $TIDELOG_PORT, else 50051)"
    )
    serve.add_argument(
        "--metrics-port",
        type=metrics_port_number,
        help="Prometheus /metrics and /healthz port; 0: any free port; -1: off "
        "(default: $TIDELOG_METRICS_PORT, else 9464)",
    )
    serve.add_argument(
        "--kafka-port",
        type=metrics_port_number,
        help="serve Kafka clients on this port (Kafka's wire protocol); 0: any free port; -1: off "
        "(default: $TIDELOG_KAFKA_PORT, else off)",
    )
    serve.add_argument("--fsync", choices=FSYNC_POLICIES, help="fsync policy (default: $TIDELOG_FSYNC, else interval)")
    serve.add_argument("--config", metavar="FILE", help="TOML config file (default: $TIDELOG_CONFIG, else none)")
    serve.add_argument(
        "--port-file",
        metavar="FILE",
        help="once serving, write the gRPC port to FILE (atomically; removed on a clean stop; default: no file)",
    )
    serve.add_argument(
        "--metrics-port-file",
        metavar="FILE",
        help="once serving, write the metrics port to FILE, as --port-file (default: no file)",
    )
    serve.add_argument(
        "--kafka-port-file",
        metavar="FILE",
        help="once serving, write the Kafka listener's port to FILE, as --port-file (default: no file)",
    )
    serve.add_argument(
        "--cluster",
        metavar="etcd://HOST:PORT[,...]",
        help="join the cluster coordinated by this etcd (default: $TIDELOG_CLUSTER, else none: a single broker)",
    )
    serve.add_argument(
        "--broker-id",
        type=int,
        metavar="N",
        help="this broker's id in the cluster, unique among its live brokers (default: $TIDELOG_BROKER_ID; "
        "required with --cluster)",
    )
    console = serve.add_argument_group("web console (README: Console)")
    console.add_argument(
        "--console-port",
        type=metrics_port_number,
        help="serve the web console on this port; 0: any free port; -1: off (default: $TIDELOG_CONSOLE_PORT, else off)",
    )
    console.add_argument(
        "--console-host", help="address the console listens on (default: $TIDELOG_CONSOLE_HOST, else 127.0.0.1)"
    )
    console.add_argument(
        "--console-port-file",
        metavar="FILE",
        help="once serving, write the console's port to FILE, as --port-file (default: no file)",
    )
    console.add_argument(
        "--console-write",
        action="store_true",
        help="let the console act: create and delete topics, reset offsets, produce, redrive (default: read-only)",
    )
    security = serve.add_argument_group("security (README: Security)")
    security.add_argument(
        "--tls-cert",
        dest="tls_cert_file",
        metavar="PEM",
        help="certificate chain every listener presents: turns TLS on (with --tls-key). Re-read when the file "
        "changes or on SIGHUP (default: $TIDELOG_TLS_CERT_FILE, else no TLS)",
    )
    security.add_argument(
        "--tls-key", dest="tls_key_file", metavar="PEM", help="its private key (default: $TIDELOG_TLS_KEY_FILE)"
    )
    security.add_argument(
        "--tls-client-ca",
        dest="tls_client_ca_file",
        metavar="PEM",
        help="mutual TLS: every client presents a certificate signed by these CAs; its common name is its "
        "principal (default: $TIDELOG_TLS_CLIENT_CA_FILE, else no client certificates)",
    )
    security.add_argument(
        "--users-file",
        metavar="FILE",
        help="every call must carry a token of a user in this file (`tidelog users add`; default: "
        "$TIDELOG_USERS_FILE, else no tokens)",
    )
    security.add_argument(
        "--acls-file",
        metavar="FILE",
        help="refuse whatever no ACL in this file allows (`tidelog acls add`; needs --users-file or "
        "--tls-client-ca; default: $TIDELOG_ACLS_FILE, else every authenticated caller may do anything)",
    )
    security.add_argument(
        "--superusers",
        metavar="NAME[,NAME...]",
        help="principals the ACLs do not apply to (default: $TIDELOG_SUPERUSERS, else none)",
    )
    security.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="listen on an address other than loopback without TLS and authentication anyway "
        "(default: $TIDELOG_INSECURE=1, else refuse): anyone who reaches it may read, write and delete every topic",
    )
    cluster = serve.add_argument_group("security in a cluster (README: Security)")
    cluster.add_argument(
        "--etcd-users",
        action="store_true",
        default=None,
        help="every call must carry a token of a user kept in the cluster's etcd (`tidelog users add --etcd "
        "URL`), the same on every broker (default: $TIDELOG_ETCD_USERS=1, else no tokens)",
    )
    cluster.add_argument(
        "--etcd-acls",
        action="store_true",
        default=None,
        help="refuse whatever no ACL kept in the cluster's etcd allows (`tidelog acls add --etcd URL`; "
        "default: $TIDELOG_ETCD_ACLS=1)",
    )
    cluster.add_argument(
        "--tls-ca",
        dest="tls_ca_file",
        metavar="PEM",
        help="the CAs the other brokers' certificates chain to (default: $TIDELOG_TLS_CA_FILE, else the system's)",
    )
    cluster.add_argument(
        "--broker-token-file",
        metavar="FILE",
        help="the token this broker shows the other brokers: a user among --superusers "
        "(default: $TIDELOG_BROKER_TOKEN_FILE; required with --etcd-users)",
    )
    serve.set_defaults(run=run)


def load_config(args: argparse.Namespace):
    """The ServerConfig of flags, environment, config file and defaults, in that order of precedence."""
    from ..config import ServerConfig

    settings: dict = {}
    path = args.config or os.environ.get("TIDELOG_CONFIG")
    if path:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # Python 3.10: the tomli backport (a dependency there)
            import tomli as tomllib
        try:
            with open(path, "rb") as f:
                settings = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CommandError(f"cannot read config file {path}: {exc}") from None
    engine = settings.pop("engine", {})
    if not isinstance(engine, dict):
        raise CommandError(f"[engine] in {path} must be a table")
    engine = dict(engine)
    for env, name in ENV_SETTINGS.items():
        if env in os.environ:
            settings[name] = _env_value(env, name)
    for env, name in ENV_ENGINE_SETTINGS.items():
        if env in os.environ:
            engine[name] = os.environ[env]
    for name in (
        "host",
        "port",
        "data_dir",
        "metrics_port",
        "cluster",
        "broker_id",
        "kafka_port",
        *SECURITY_SETTINGS,
    ):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.fsync is not None:
        engine["fsync"] = args.fsync
    if engine:
        settings["engine"] = engine
    return ServerConfig().with_overrides(settings)


def _env_value(env: str, name: str):
    value = os.environ[env]
    if name in FLAG_SETTINGS:
        if value.lower() not in ("1", "true", "yes", "0", "false", "no", ""):
            raise UsageError(f"${env} must be 1 or 0, got {value!r}")
        return value.lower() in ("1", "true", "yes")
    if name not in INTEGER_SETTINGS:
        return value
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"${env} must be an integer, got {value!r}") from None


def run(args: argparse.Namespace) -> int:
    import asyncio

    from ..server.app import serve
    from ..tuning import tune_malloc

    config = load_config(args)
    if args.metrics_port_file and config.metrics_port == -1:
        raise UsageError("--metrics-port-file: the metrics endpoint is off (metrics port -1)")
    if args.kafka_port_file and config.kafka_port == -1:
        raise UsageError("--kafka-port-file: the Kafka listener is off (give --kafka-port)")
    console_port, console_host = _console_where(args, config)
    written: list[str] = []
    consoles: list = []

    def ready(server) -> None:
        """Say where the broker serves: a line on stdout, and the port files asked for."""
        where = {"address": f"{config.host}:{server.port}"}
        if console_port != -1:
            consoles.append(_start_console(config, server, console_host, console_port, args.console_write))
            where["console_address"] = f"{console_host}:{consoles[0].port}"
        if server.metrics_port is not None:
            where["metrics_address"] = f"{config.metrics_host or config.host}:{server.metrics_port}"
        if server.kafka_port is not None:
            where["kafka_address"] = f"{config.kafka_host or config.host}:{server.kafka_port}"
        where["security"] = server.security  # "open": anyone who reaches the ports may do anything
        if args.log_format == "json":
            print(json.dumps({"event": "serving", **where}), flush=True)
        else:
            print(" ".join(["tidelog serving", *(f"{k}={v}" for k, v in where.items())]), flush=True)
        for path, port in (
            (args.port_file, server.port),
            (args.metrics_port_file, server.metrics_port),
            (args.kafka_port_file, server.kafka_port),
            (args.console_port_file, consoles[0].port if consoles else None),
        ):
            if path:
                write_atomically(path, f"{port}\n")
                written.append(path)

    tune_malloc()
    try:
        asyncio.run(serve(config, ready))
    finally:
        for console in consoles:
            console.stop()
        for path in written:
            try:
                os.unlink(path)
            except OSError:
                pass
    return 0


def _console_where(args: argparse.Namespace, config) -> tuple[int, str]:
    """The console's port (-1: off) and host, from flags or $TIDELOG_CONSOLE_PORT/HOST; refusals first."""
    from ..config import is_loopback

    port = args.console_port
    if port is None:
        value = os.environ.get("TIDELOG_CONSOLE_PORT", "-1")
        try:
            port = metrics_port_number(value)
        except argparse.ArgumentTypeError:
            raise UsageError(f"$TIDELOG_CONSOLE_PORT must be a port or -1, got {value!r}") from None
    host = args.console_host or os.environ.get("TIDELOG_CONSOLE_HOST") or "127.0.0.1"
    if port == -1:
        if args.console_port_file or args.console_write:
            raise UsageError("--console-port-file and --console-write need the console (give --console-port)")
        return -1, host
    if config.tls_client_ca_file:
        raise UsageError("the console does not present a client certificate yet: run it without --tls-client-ca")
    if config.tls and not config.tls_ca_file:
        raise UsageError("a console on a broker with TLS checks its certificate: give --tls-ca (the CA that signed it)")
    if not is_loopback(host) and not (config.tls and config.has_users) and not config.insecure:
        raise UsageError(
            f"refusing to serve the console on {host} without TLS and users: anyone reaching it could read "
            "every topic; keep it on 127.0.0.1 (reach it through an SSH tunnel), or pass --insecure"
        )
    return port, host


def _start_console(config, server, host: str, port: int, write: bool) -> ConsoleProcess:
    """`tidelog console` beside the broker, in a process of its own (its work never holds the broker's
    GIL), reading this broker through its gRPC port (and its /metrics, when on); it ends with the broker."""
    import dataclasses
    import tempfile

    from ..config import is_loopback

    broker_host = config.host if is_loopback(config.host) else "127.0.0.1"
    command = [sys.executable, "-m", "tidelog", "--server", f"{broker_host}:{server.port}"]
    if config.tls:
        command += ["--ca-file", config.tls_ca_file] + (
            ["--server-name", config.advertised_host] if config.advertised_host else []
        )
    port_file = os.path.join(tempfile.mkdtemp(prefix="tidelog-console-"), "port")
    command += ["console", "--host", host, "--port", str(port), "--port-file", port_file]
    if server.metrics_port is not None:
        metrics_host = config.metrics_host or config.host
        metrics_host = metrics_host if is_loopback(metrics_host) else "127.0.0.1"
        command += [
            "--metrics-url",
            f"{'https' if config.tls else 'http'}://{metrics_host}:{server.metrics_port}/metrics",
        ]
    if config.tls:
        command += ["--https-cert", config.tls_cert_file, "--https-key", config.tls_key_file]
    command += (["--write"] if write else []) + (["--ask-users"] if config.has_users else [])
    command += ["--insecure"] if config.insecure else []
    settings = json.dumps(dataclasses.asdict(config), default=str)
    return ConsoleProcess(command, {**os.environ, "TIDELOG_CONSOLE_SETTINGS": settings}, port_file)


class ConsoleProcess:
    """The console's process: started, its port read from the file it writes once it serves; stopped
    (SIGTERM, then SIGKILL) with the broker, and told to end if the broker dies first."""

    def __init__(self, command: list[str], env: dict[str, str], port_file: str, timeout_s: float = 60.0) -> None:
        import subprocess
        import time

        self.port_file = port_file
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, preexec_fn=_end_with_parent)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with open(port_file) as f:
                    self.port = int(f.read())
                return
            except (OSError, ValueError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise CommandError("the console did not start (its error is above)")
            time.sleep(0.05)

    def stop(self) -> None:
        import shutil
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(os.path.dirname(self.port_file), ignore_errors=True)


def _end_with_parent() -> None:
    """In the console's process, before it runs: SIGTERM when the broker's process dies (Linux)."""
    import ctypes

    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def write_atomically(path: str, text: str) -> None:
    """Write through a temporary file renamed over `path`: a reader sees no file or the whole of it."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w") as f:
            f.write(text)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
