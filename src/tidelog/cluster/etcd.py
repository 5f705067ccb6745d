"""Connecting to etcd: the URL a user gives (`etcd://host:port[,host:port...]`) and the channel options
without which losing one etcd member stalls every client that had picked it."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import InvalidConfigError

# Round robin over every member, and keepalives that notice a dead or isolated member within seconds.
# Not more often than every 5 s: that is etcd's default --grpc-keepalive-min-time, and a client that
# pings faster gets GOAWAY "too_many_pings", which breaks every call on the connection.
CHANNEL_OPTIONS = {
    "grpc.lb_policy_name": "round_robin",
    "grpc.keepalive_time_ms": 5000,
    "grpc.keepalive_timeout_ms": 2000,
    "grpc.keepalive_permit_without_calls": 0,  # etcd refuses pings on a connection without calls
    "grpc.http2.max_pings_without_data": 0,
}
CALL_TIMEOUT_S = 5
# Sent with every call: a member cut off from its quorum (no leader) then fails the call at once
# ("etcdserver: no leader") instead of holding it until CALL_TIMEOUT_S, so the next call, which the
# round robin sends to another member, can renew the lease in time.
REQUIRE_LEADER = (("hasleader", "true"),)


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

    class Client(aetcd.Client):
        def _init_channel_attrs(self) -> None:  # aetcd resets its call metadata here
            super()._init_channel_attrs()
            self.metadata = REQUIRE_LEADER

    # aetcd dials f"{host}:{port}": a multi-address target is split at its last colon to fit that
    target = ("ipv4:" if len(members) > 1 else "") + ",".join(f"{h}:{p}" for h, p in members)
    host, _, port = target.rpartition(":")
    return Client(host=host, port=int(port), timeout=CALL_TIMEOUT_S, options=CHANNEL_OPTIONS)


def server_command(
    binary: str,
    name: str,
    data_dir: str,
    client_port: int,
    peer_port: int,
    *,
    host: str = "127.0.0.1",
    initial_cluster: dict[str, str] | None = None,
) -> list[str]:
    """The command line of one etcd member on `host` (development and tests), with pre-vote on:
    without it, a member cut off and back forces a needless re-election. Alone by default; a member
    of several with `initial_cluster` (name -> peer URL of every member, this one included)."""
    client, peer = f"http://{host}:{client_port}", f"http://{host}:{peer_port}"
    members = initial_cluster or {name: peer}
    if members.get(name) != peer:
        raise ValueError(f"initial_cluster must name this member: {name}={peer}")
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
        ",".join(f"{n}={u}" for n, u in members.items()),
        "--initial-cluster-state",
        "new",
        "--pre-vote=true",
        "--heartbeat-interval",
        "100",
        "--election-timeout",
        "1000",
    ]
