"""Connecting to etcd: the URL a user gives (`etcd://host:port[,host:port...]`) and the channel options
without which losing one etcd member stalls every client that had picked it."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import InvalidConfigError

# Round robin over every member, and keepalives that notice a dead or isolated member within seconds.
CHANNEL_OPTIONS = {
    "grpc.lb_policy_name": "round_robin",
    "grpc.keepalive_time_ms": 1000,
    "grpc.keepalive_timeout_ms": 1000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.http2.max_pings_without_data": 0,
}
CALL_TIMEOUT_S = 5


def endpoints(url: str) -> list[tuple[str, int]]:
    """The (host, port) pairs of `etcd://h1:p1,h2:p2`; InvalidConfigError names what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "etcd" or not parts.netloc or parts.path not in ("", "/"):
        raise InvalidConfigError(f"cluster must be etcd://HOST:PORT[,HOST:PORT...], got {url!r}")
    out = []
    for item in parts.netloc.split(","):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidConfigError(f"cluster: {item!r} in {url!r} is not HOST:PORT")
        out.append((host, int(port)))
    return out


def connect(url: str):
    """An aetcd client for every member of `url` (aetcd passes a multi-address target to grpc)."""
    try:
        import aetcd
    except ImportError:  # pragma: no cover - the cluster extra is missing
        raise InvalidConfigError("a cluster needs the etcd client: pip install 'tidelog[cluster]'") from None
    members = endpoints(url)
    # aetcd dials f"{host}:{port}": a multi-address target is split at its last colon to fit that
    target = ("ipv4:" if len(members) > 1 else "") + ",".join(f"{h}:{p}" for h, p in members)
    host, _, port = target.rpartition(":")
    return aetcd.Client(host=host, port=int(port), timeout=CALL_TIMEOUT_S, options=CHANNEL_OPTIONS)


def server_command(binary: str, name: str, data_dir: str, client_port: int, peer_port: int) -> list[str]:
    """The command line of a one-member etcd on 127.0.0.1 (development and tests), with pre-vote on:
    without it, a member cut off and back forces a needless re-election."""
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    return [
        binary,
        "--name",
        name,
        "--data-dir",
        data_dir,
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        f"{name}={peer}",
        "--pre-vote=true",
        "--heartbeat-interval",
        "100",
        "--election-timeout",
        "1000",
    ]
