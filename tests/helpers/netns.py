"""Network faults for the cluster tests: every node (etcd, each broker) in a network namespace of its
own, wired to a Linux bridge that lives in one more namespace, so the host's network is never touched
but for one veth pair, created for the test and removed with it.

    host namespace (the test process: clients, history)      tlXXXXXX   10.77.N.254/24
        | veth tlXXXXXX <-> "host" (bridge port)
    tlXXXXXXbr: bridge br0, one port per node ("p-etcd", "p-b1", ...)
        | veth p-NAME <-> eth0
    tlXXXXXXNAME: eth0 10.77.N.k/24, lo; the node's process runs here (`ip netns exec`)

Names are `tl` + 6 random hex digits (+ the node's name), the /24 a random one of 10.77.0.0/16 that no
host route covers. Processes are started with `ip netns exec NS ...` (which execs: the PID is the
node's) and stopped by PID; teardown kills whatever is left in each namespace (`ip netns pids`),
deletes the namespaces (which deletes their veths) and the host's veth, even when the test failed
(the `network` context manager, and an atexit hook for a run cut short).

Faults, each with its heal:

- `link_down(name)` / `link_up(name)`: the node's bridge port down: its cable is cut (silent: packets
  vanish, no connection is refused).
- `drop(src, dst)` / `undrop(src, dst)`: packets from src arriving at dst are dropped (a rule in dst's
  namespace, input hook: silent for the sender). `cut(a, b)` / `uncut` both ways; `isolate(name, peers)`
  / `heal_drops()`. Asymmetric partitions are one `drop`. `host` names the test process (the clients).
  nftables (installed when missing and root, like etcd-server), else iptables, else the test skips.
- `rate_limit(name, rate)` / `unrate(name)`: a tbf qdisc both ways on the node's link.
- `DelayProxy`: this kernel has no netem, so delay is a userspace TCP proxy (in the test process,
  listening on the host's address in the network): point a client (or a broker's etcd URL) at it.
- `heal()`: every fault off.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ipaddress
import os
import random
import secrets
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

import grpc
import pytest

from tidelog.cluster.etcd import server_command

from ..server_process import ServerProcess
from .cluster import Cluster, Settings
from .etcd import etcd_binary, wait_healthy

HOST = "host"
"""The name of the test process's side (clients) in drop rules."""
BROKER_PORT = 9092
ETCD_CLIENT_PORT, ETCD_PEER_PORT = 2379, 2380
FIREWALL_TABLE = "tlfault"

_LIVE: set[Network] = set()


def _run(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=60)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def _install(package: str) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
        subprocess.run(
            ["apt-get", "-o", "DPkg::Lock::Timeout=300", "update"], env=env, capture_output=True, timeout=900
        )
        subprocess.run(install, env=env, capture_output=True, timeout=900)


def require_namespaces() -> None:
    """Skip (saying why) where network namespaces cannot be made: not root, no `ip`, refused."""
    if os.geteuid() != 0:
        pytest.skip("the network-fault tests need root (ip netns add)")
    if not shutil.which("ip"):
        pytest.skip("the network-fault tests need iproute2 (ip)")
    probe = f"tl{secrets.token_hex(3)}probe"
    result = _run("ip", "netns", "add", probe, check=False)
    if result.returncode != 0:
        pytest.skip(f"ip netns add was refused: {result.stderr.strip()}")
    _run("ip", "netns", "del", probe, check=False)


def firewall() -> str:
    """ "nft" or "iptables": the tool drop rules are made with (installing nftables where it is missing
    and we are root); skips the test when there is neither."""
    if not shutil.which("nft") and os.geteuid() == 0 and shutil.which("apt-get"):
        _install("nftables")
    if shutil.which("nft"):
        return "nft"
    if shutil.which("iptables"):
        return "iptables"
    pytest.skip("drop rules need nft (Debian: nftables) or iptables; neither is installed nor installable")


@dataclass
class Node:
    name: str
    ns: str
    ip: str
    port: str
    """Its port on the bridge, in the bridge's namespace."""

    @property
    def exec(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.ns)


class Network:
    def __init__(self) -> None:
        self.tag = f"tl{secrets.token_hex(3)}"
        self.bridge_ns = f"{self.tag}br"
        self.host_if = self.tag
        self.subnet = self._free_subnet()
        self.host_ip = str(self.subnet.network_address + 254)
        self.nodes: dict[str, Node] = {}
        self.namespaces: list[str] = []
        self.tool = ""
        self._drops: set[tuple[str, str]] = set()
        self._down: set[str] = set()
        self._rated: set[str] = set()

    @staticmethod
    def _free_subnet() -> ipaddress.IPv4Network:
        routes = _run("ip", "-4", "route", "show", "table", "all", check=False).stdout
        used = set()
        for line in routes.splitlines():
            for word in line.split()[:2]:  # "10.0.0.0/8 dev ..." or "local 10.0.0.1 dev ..."
                with contextlib.suppress(ValueError):
                    used.add(ipaddress.ip_network(word, strict=False))
        for _ in range(100):
            subnet = ipaddress.ip_network(f"10.77.{random.randrange(1, 255)}.0/24")
            if not any(subnet.overlaps(u) for u in used if u.prefixlen > 0):
                return subnet
        raise RuntimeError("no free /24 in 10.77.0.0/16")

    # -- building ---------------------------------------------------------------------------------------
    def create(self) -> Network:
        require_namespaces()
        _LIVE.add(self)
        self._add_ns(self.bridge_ns)
        br = ("ip", "-n", self.bridge_ns)
        _run(*br, "link", "add", "br0", "type", "bridge")
        _run(*br, "link", "set", "br0", "up")
        _run(*br, "link", "set", "lo", "up")
        _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", HOST, "netns", self.bridge_ns)
        _run(*br, "link", "set", HOST, "master", "br0", "up")
        _run("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
        _run("ip", "link", "set", self.host_if, "up")
        return self

    def _add_ns(self, ns: str) -> None:
        _run("ip", "netns", "add", ns)
        self.namespaces.append(ns)

    def add_node(self, name: str) -> Node:
        assert name != HOST and len(name) <= 12 and name not in self.nodes
        node = Node(name, f"{self.tag}{name}", str(self.subnet.network_address + len(self.nodes) + 1), f"p-{name}")
        self._add_ns(node.ns)
        _run(
            "ip",
            "-n",
            node.ns,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            node.port,
            "netns",
            self.bridge_ns,
        )
        _run("ip", "-n", self.bridge_ns, "link", "set", node.port, "master", "br0", "up")
        _run("ip", "-n", node.ns, "addr", "add", f"{node.ip}/24", "dev", "eth0")
        _run("ip", "-n", node.ns, "link", "set", "eth0", "up")
        _run("ip", "-n", node.ns, "link", "set", "lo", "up")
        self.nodes[name] = node
        return node

    def ip(self, name: str) -> str:
        return self.host_ip if name == HOST else self.nodes[name].ip

    def teardown(self) -> None:
        """Every process in the namespaces killed, every namespace and veth removed. Never raises."""
        for ns in self.namespaces:
            pids = _run("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGCONT)
                    os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 10
        for ns in self.namespaces:
            while _run("ip", "netns", "pids", ns, check=False).stdout.split() and time.monotonic() < deadline:
                time.sleep(0.05)
        for ns in reversed(self.namespaces):
            _run("ip", "netns", "del", ns, check=False)
        _run("ip", "link", "del", self.host_if, check=False)  # gone with its peer already, normally
        self.namespaces.clear()
        _LIVE.discard(self)

    # -- faults -----------------------------------------------------------------------------------------
    def link_down(self, name: str) -> None:
        """Cut the node's cable: its bridge port goes down, every packet to or from it vanishes."""
        _run("ip", "-n", self.bridge_ns, "link", "set", "dev", self.nodes[name].port, "down")
        self._down.add(name)

    def link_up(self, name: str) -> None:
        _run("ip", "-n", self.bridge_ns, "link", "set", "dev", self.nodes[name].port, "up")
        self._down.discard(name)

    def drop(self, src: str, dst: str) -> None:
        """Packets from src to dst are dropped: in dst's namespace, input hook (the sender sees silence).
        Either may be HOST (the test process, whose namespace is never filtered): packets to HOST are
        dropped in src's namespace, output hook (there a local sender may see EPERM, not silence)."""
        assert src != dst and HOST in (src, dst) or (src in self.nodes and dst in self.nodes)
        self._drops.add((src, dst))
        self._apply(src if dst == HOST else dst)

    def undrop(self, src: str, dst: str) -> None:
        self._drops.discard((src, dst))
        self._apply(src if dst == HOST else dst)

    def cut(self, a: str, b: str) -> None:
        """a and b no longer hear each other (both ways)."""
        self.drop(a, b)
        self.drop(b, a)

    def uncut(self, a: str, b: str) -> None:
        self.undrop(a, b)
        self.undrop(b, a)

    def isolate(self, name: str, peers) -> None:
        """Cut `name` from each of `peers` (both ways); it still hears everyone else."""
        for peer in peers:
            self.cut(name, peer)

    def heal_drops(self) -> None:
        touched = {src if dst == HOST else dst for src, dst in self._drops}
        self._drops.clear()
        for name in touched:
            self._apply(name)

    def _apply(self, name: str) -> None:
        """Write node `name`'s whole rule set from self._drops, atomically (nft) or flushed and refilled."""
        if not self.tool:
            self.tool = firewall()
        sources = sorted(self.ip(s) for s, d in self._drops if d == name)
        to_host = (name, HOST) in self._drops
        node = self.nodes[name]
        if self.tool == "nft":
            rules = [f"ip saddr {ip} drop" for ip in sources]
            out = [f"ip daddr {self.host_ip} drop"] if to_host else []
            script = (
                f"table inet {FIREWALL_TABLE}\ndelete table inet {FIREWALL_TABLE}\n"
                f"table inet {FIREWALL_TABLE} {{\n"
                "  chain input { type filter hook input priority 0; policy accept;\n"
                + "".join(f"    {r}\n" for r in rules)
                + "  }\n  chain output { type filter hook output priority 0; policy accept;\n"
                + "".join(f"    {r}\n" for r in out)
                + "  }\n}\n"
            )
            _run(*node.exec, "nft", "-f", "-", input=script)
        else:
            ipt = (*node.exec, "iptables", "-w")
            _run(*ipt, "-F", "INPUT")
            _run(*ipt, "-F", "OUTPUT")
            for ip in sources:
                _run(*ipt, "-A", "INPUT", "-s", ip, "-j", "DROP")
            if to_host:
                _run(*ipt, "-A", "OUTPUT", "-d", self.host_ip, "-j", "DROP")

    def rate_limit(self, name: str, rate: str = "1mbit", burst: str = "32kb", latency: str = "200ms") -> None:
        """A token bucket both ways on the node's link (its eth0 out, its bridge port out = its in)."""
        node = self.nodes[name]
        for ns, dev in ((node.ns, "eth0"), (self.bridge_ns, node.port)):
            _run("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate,
                 "burst", burst, "latency", latency)  # fmt: skip
        self._rated.add(name)

    def unrate(self, name: str) -> None:
        node = self.nodes[name]
        for ns, dev in ((node.ns, "eth0"), (self.bridge_ns, node.port)):
            _run("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root", check=False)
        self._rated.discard(name)

    def heal(self) -> None:
        for name in list(self._down):
            self.link_up(name)
        self.heal_drops()
        for name in list(self._rated):
            self.unrate(name)


@contextlib.contextmanager
def network():
    """A Network created for the block and torn down after it, whatever happens."""
    net = Network()
    try:
        yield net.create()
    finally:
        net.teardown()


@atexit.register
def _teardown_leftovers() -> None:
    for net in list(_LIVE):
        net.teardown()


# -- delay: a userspace TCP proxy -----------------------------------------------------------------------
class DelayProxy:
    """Forwards TCP connections from (listen_host, an ephemeral port) to target, holding every chunk
    `delay_s` (settable at any time; order kept) in each direction. Runs its own asyncio loop in a
    thread of the test process."""

    def __init__(self, listen_host: str, target_host: str, target_port: int, delay_s: float = 0.0) -> None:
        self.listen_host, self.target = listen_host, (target_host, target_port)
        self.delay_s = delay_s
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="delay-proxy")
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def address(self) -> str:
        return f"{self.listen_host}:{self.port}"

    def start(self) -> DelayProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, self.listen_host, 0), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close():
            assert self._server is not None
            self._server.close()
            for t in list(self._tasks):
                t.cancel()

        if self._server is not None:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer)),
            asyncio.ensure_future(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in pumps:
                t.cancel()
                self._tasks.discard(t)
            for w in (writer, up_writer):
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def send():
            while True:
                due, data = await queue.get()
                if data is None:
                    writer.write_eof() if writer.can_write_eof() else None
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await reader.read(65536)
                await queue.put((time.monotonic() + self.delay_s, data or None))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()


# -- a cluster in the network ---------------------------------------------------------------------------
class NetEtcd:
    """One etcd member in its own namespace, on fixed ports (the namespace has its own)."""

    def __init__(self, net: Network, directory: str, name: str = "etcd") -> None:
        self.net, self.directory = net, directory
        self.node = net.nodes.get(name) or net.add_node(name)
        os.makedirs(directory, exist_ok=True)
        self.log_path = os.path.join(directory, "etcd.log")
        self.proc: subprocess.Popen | None = None
        self._initial_cluster: dict[str, str] | None = None

    @property
    def url(self) -> str:
        return f"etcd://{self.node.ip}:{ETCD_CLIENT_PORT}"

    @property
    def names(self) -> list[str]:
        return [self.node.name]

    def start(self, initial_cluster: dict[str, str] | None = None, wait: bool = True) -> NetEtcd:
        argv = server_command(
            etcd_binary(),
            self.node.name,
            os.path.join(self.directory, "data"),
            ETCD_CLIENT_PORT,
            ETCD_PEER_PORT,
            host=self.node.ip,
            initial_cluster=initial_cluster,
        )
        self._initial_cluster = initial_cluster
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*self.node.exec, *argv], stdout=log, stderr=subprocess.STDOUT)
        return self.wait_started() if wait else self

    def wait_started(self, timeout_s: float = 30) -> NetEtcd:
        assert self.proc is not None
        if wait_healthy(self.proc, self.node.ip, ETCD_CLIENT_PORT, timeout_s):
            return self
        self.stop()
        raise RuntimeError(f"etcd did not start: {open(self.log_path, errors='replace').read()[-2000:]}")

    @property
    def peer_url(self) -> str:
        return f"http://{self.node.ip}:{ETCD_PEER_PORT}"

    def kill(self) -> None:
        """SIGKILL (a crash): its data directory stays, restart() brings the same member back."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> NetEtcd:
        return self.start(self._initial_cluster)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class NetEtcdCluster:
    """`members` etcd members, nodes "etcd1".."etcdN", each in its own namespace (so each can be cut,
    killed or isolated alone); `url` names every member, as a broker's `cluster` setting does."""

    def __init__(self, net: Network, directory: str, members: int = 3) -> None:
        self.members = [NetEtcd(net, os.path.join(directory, f"etcd{i}"), f"etcd{i}") for i in range(1, members + 1)]

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(f"{m.node.ip}:{ETCD_CLIENT_PORT}" for m in self.members)

    @property
    def names(self) -> list[str]:
        return [m.node.name for m in self.members]

    def member(self, name: str) -> NetEtcd:
        return next(m for m in self.members if m.node.name == name)

    def start(self) -> NetEtcdCluster:
        initial = {m.node.name: m.peer_url for m in self.members}
        for m in self.members:  # all at once: none is healthy before a quorum runs
            m.start(initial, wait=False)
        for m in self.members:
            m.wait_started()
        return self

    def stop(self) -> None:
        for m in self.members:
            m.stop()


# Clients reconnect within a second after a heal (gRPC's default backoff grows to two minutes).
CLIENT_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


class NetCluster(Cluster):
    """Cluster (tests/helpers/cluster.py) with etcd and each broker in a namespace of `net`: node "etcd"
    (or, with etcd_members > 1, "etcd1".."etcdN"), nodes "b1".."bN"; each broker listens on its
    namespace's address, port 9092, and advertises it.

    Each broker's lease clock reads the file `clock_file(id)` (TIDELOG_TEST_CLOCK_FILE; see
    `jump_clock`), and `etcd_urls` may give one broker another etcd URL (a DelayProxy's)."""

    def __init__(
        self,
        net: Network,
        directory: str,
        brokers: int = 3,
        settings: Settings | None = None,
        *extra: str,
        etcd_members: int = 1,
    ):
        self.net = net
        etcd_dir = os.path.join(directory, "etcd")
        etcd = NetEtcd(net, etcd_dir) if etcd_members == 1 else NetEtcdCluster(net, etcd_dir, etcd_members)
        super().__init__(directory, brokers, settings, *extra, etcd=etcd)
        self.etcd_urls: dict[int, str] = {}
        for i in self.ids:
            net.nodes.get(f"b{i}") or net.add_node(f"b{i}")

    @property
    def etcd_nodes(self) -> list[str]:
        """The network node names of the etcd members."""
        return self.etcd.names

    def cluster_url(self, broker_id: int) -> str:
        return self.etcd_urls.get(broker_id) or self.etcd.url

    def clock_file(self, broker_id: int) -> str:
        return os.path.join(self.directory, f"b{broker_id}.clock")

    def jump_clock(self, broker_id: int, offset_s: float) -> None:
        """Broker `broker_id`'s lease clock runs `offset_s` ahead (behind, if negative) from now on (it
        reads the file within 50 ms); 0 puts it back."""
        path = self.clock_file(broker_id)
        with open(path + ".tmp", "w") as f:
            f.write(f"{offset_s}\n")
        os.replace(path + ".tmp", path)

    def broker_process(self, broker_id: int, config: str) -> ServerProcess:
        node = self.net.nodes[f"b{broker_id}"]
        own = os.path.join(self.directory, f"b{broker_id}.toml")
        with open(config) as f, open(own, "w") as out:
            # a private network of namespaces this test made: served open on purpose (without it a broker
            # refuses to listen beyond loopback with no TLS and authentication)
            out.write(f.read() + f'advertised_host = "{node.ip}"\ninsecure = true\n')
        # `env` execs the server, so the PID stays the server's
        clock = ("env", f"TIDELOG_TEST_CLOCK_FILE={self.clock_file(broker_id)}")
        return super().broker_process(broker_id, own, port=BROKER_PORT, host=node.ip, wrapper=(*node.exec, *clock))

    def node(self, broker_id: int) -> str:
        return f"b{broker_id}"

    def broker_of(self, address: str) -> int | None:
        for i, b in self.brokers.items():
            if b.port is not None and b.target == address:
                return i
        return None

    def channel(self, target: str) -> grpc.Channel:
        found = self._channels.get(target)
        if found is None:
            found = self._channels[target] = grpc.insecure_channel(target, options=CLIENT_CHANNEL_OPTIONS)
        return found
