"""A broker's membership of a cluster: its registration on an etcd lease, and the controller election.

Keys, under `/tidelog/<cluster>/`:

- `brokers/<id>` → {"endpoint", "incarnation", "storage"[, "kafka"]} on the broker's lease (storage: its
  data directory's id, engine/storage_identity.py; kafka: host:port of its Kafka listener, when on). Taken only if absent
  (`create_revision == 0`), so two live brokers never share an id; its create_revision is the broker
  epoch. The lease ends with the process (revoked at a clean stop, expired after a crash).
- `controller` → {"broker_id"} on the controller's lease, taken the same way; its create_revision is
  the controller epoch, which grows with every new controller.

A lease says a holder was alive, not that it still is, so every effect is fenced: a broker counts
itself a member (and the controller) only until its local deadline, the send time of its last
successful keepalive + the session timeout - a margin, which passes before etcd can give its keys to
another; and a controller's writes are transactions that compare the controller key's create_revision
with its epoch, so a deposed controller's write fails instead of landing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import BrokerIdInUseError, ClusterUnavailableError

log = logging.getLogger("tidelog.cluster")

DEADLINE_MARGIN = 0.1  # the local deadline ends this fraction of the session early (clock rates, rounding)


class SkewedClock:
    """time.monotonic() plus an offset read from a file, for the tests that jump one broker's lease
    clock (TIDELOG_TEST_CLOCK_FILE; never set by configuration). The file holds seconds as text; it is
    read again at most every 50 ms, and a missing or unreadable file counts as no offset."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._offset = 0.0
        self._read_at = -1.0

    def __call__(self) -> float:
        now = time.monotonic()
        if now - self._read_at >= 0.05:
            self._read_at = now
            try:
                with open(self.path) as f:
                    self._offset = float(f.read().strip() or 0)
            except (OSError, ValueError):
                self._offset = 0.0
        return now + self._offset


def lease_clock() -> Callable[[], float]:
    """The clock a broker's session deadline is kept on: monotonic (a wall-clock jump cannot move it),
    or, for the clock-jump tests only, SkewedClock."""
    path = os.environ.get("TIDELOG_TEST_CLOCK_FILE", "")
    if not path:
        return time.monotonic
    log.error(
        "the lease clock is skewed by the file %s (TIDELOG_TEST_CLOCK_FILE: a test hook)",
        path,
        extra={"event": "test_clock", "path": path},
    )
    return SkewedClock(path)


def prefix(cluster: str) -> bytes:
    return f"/tidelog/{cluster}/".encode()


def broker_key(cluster: str, broker_id: int) -> bytes:
    return prefix(cluster) + b"brokers/%d" % broker_id


def controller_key(cluster: str) -> bytes:
    return prefix(cluster) + b"controller"


@dataclass(frozen=True)
class BrokerInfo:
    broker_id: int
    endpoint: str
    incarnation: str
    epoch: int  # create_revision of its registration
    storage: str = ""  # its data directory's id ("": a broker that does not say)
    kafka: str = ""  # host:port Kafka clients reach it at ("": its Kafka listener is off)


@dataclass(frozen=True)
class ClusterStatus:
    brokers: list[BrokerInfo]
    controller_id: int | None
    controller_epoch: int | None


class BrokerSession:
    """One broker's registration and its part in the controller election. Event-loop only."""

    def __init__(
        self,
        client: Any,
        cluster: str,
        broker_id: int,
        endpoint: str,
        session_timeout_ms: int,
        clock: Callable[[], float] = time.monotonic,
        storage_id: str = "",
        kafka_endpoint: str = "",
    ) -> None:
        self.client, self.cluster, self.broker_id, self.endpoint = client, cluster, broker_id, endpoint
        self.storage_id = storage_id
        self.kafka_endpoint = kafka_endpoint
        self.ttl_s = max(1, math.ceil(session_timeout_ms / 1000))  # etcd leases count whole seconds
        self.incarnation = secrets.token_hex(8)  # tells this run of the broker from an earlier one
        self._clock = clock
        self._lease: Any = None
        self._deadline = 0.0
        self.epoch: int | None = None
        self.controller_epoch: int | None = None
        self._keepalive: asyncio.Task | None = None
        self._campaign: asyncio.Future | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Register, then stand for controller. The id may still be held by this broker's previous run
        (killed less than a session ago): wait up to two sessions for it to expire, then refuse
        (BrokerIdInUseError: another live broker has the id)."""
        deadline = self._clock() + 2 * self.ttl_s
        while True:
            try:
                await self._register()
                break
            except BrokerIdInUseError as exc:
                if self._clock() >= deadline:
                    raise
                log.warning("%s; waiting for it to expire", exc.message, extra={"event": "broker_id_held"})
                await asyncio.sleep(min(0.5, self.ttl_s / 3))
        await self.campaign()
        self._keepalive = asyncio.ensure_future(self._keep_alive())

    async def _register(self) -> None:
        key = broker_key(self.cluster, self.broker_id)
        doc = {"endpoint": self.endpoint, "incarnation": self.incarnation, "storage": self.storage_id}
        if self.kafka_endpoint:
            doc["kafka"] = self.kafka_endpoint
        value = json.dumps(doc).encode()
        try:
            sent = self._clock()
            self._lease = await self.client.lease(self.ttl_s)
            tx = self.client.transactions
            taken, _ = await self.client.transaction(
                compare=[tx.create(key) == 0], success=[tx.put(key, value, lease=self._lease.id)], failure=[]
            )
            if not taken:
                holder = await self.client.get(key)
                await self._revoke()
                raise BrokerIdInUseError(
                    f"broker id {self.broker_id} is registered in cluster {self.cluster!r} by "
                    f"{_endpoint_of(holder)}: another broker runs with this id, or the session of one that "
                    f"stopped has not expired yet (up to {self.ttl_s} s)",
                    broker_id=self.broker_id,
                )
            self._deadline = sent + self.ttl_s * (1 - DEADLINE_MARGIN)
            self.epoch = (await self.client.get(key)).create_revision
        except BrokerIdInUseError:
            raise
        except Exception as exc:  # aetcd raises its own errors for an unreachable or failing etcd
            raise ClusterUnavailableError(f"cannot register with etcd: {exc}") from None
        log.info(
            "broker registered",
            extra={"event": "broker_registered", "broker_id": self.broker_id, "broker_epoch": self.epoch},
        )

    async def close(self) -> None:
        """Leave the cluster at once (revoking the lease drops the registration and the controller key)."""
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self._campaign is not None:
            self._campaign.cancel()
        self._deadline = 0.0
        self.controller_epoch = None
        await self._revoke()

    async def _revoke(self) -> None:
        if self._lease is not None:
            try:
                await self.client.revoke_lease(self._lease.id)
            except Exception as exc:  # the lease then expires on its own
                log.warning("could not revoke the broker's etcd lease: %s", exc)
            self._lease = None

    async def _keep_alive(self) -> None:
        failures = 0
        while True:
            # after a failure, try once again soon: the round robin sends it to another etcd member
            await asyncio.sleep(0.1 if failures == 1 else self.ttl_s / 3)
            failures += 1
            sent = self._clock()
            try:
                # Bounded by the renewal period: a member that went silent (its link cut) holds the call
                # until the client's timeout, past the deadline; the next try goes to another member.
                reply = await asyncio.wait_for(self.client.refresh_lease(self._lease.id), self.ttl_s / 3)
            except Exception as exc:
                log.warning("etcd keepalive failed: %s", exc, extra={"event": "broker_keepalive_failed"})
                continue
            failures = 0
            if reply is None or reply.TTL <= 0:  # expired: its keys are gone, and maybe taken by others
                self._lost("its etcd lease expired")
                await self._rejoin()
                continue
            self._deadline = sent + self.ttl_s * (1 - DEADLINE_MARGIN)
            if self.controller_epoch is None and (self._campaign is None or self._campaign.done()):
                # beside the renewals, not in their way: a campaign sent to a member that lost its
                # quorum waits for the call timeout, longer than the session
                self._campaign = asyncio.ensure_future(self._bounded_campaign())

    async def _rejoin(self) -> None:
        """Register again after losing the session (a long pause, etcd out of reach), as a new epoch."""
        self._lease = None  # expired: nothing to revoke
        while True:
            try:
                await self._register()
                self._campaign = asyncio.ensure_future(self._bounded_campaign())
                return
            except (BrokerIdInUseError, ClusterUnavailableError) as exc:
                log.warning("could not rejoin the cluster yet: %s", exc.message)
                await asyncio.sleep(self.ttl_s / 3)

    def _lost(self, why: str) -> None:
        log.error(
            "broker left the cluster: %s",
            why,
            extra={"event": "broker_session_lost", "broker_id": self.broker_id},
        )
        self._deadline = 0.0
        self.controller_epoch = None

    # -- the controller ----------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """Whether this broker may still act as a member: its local deadline has not passed."""
        return self._clock() < self._deadline

    @property
    def is_controller(self) -> bool:
        return self.controller_epoch is not None and self.alive

    async def _bounded_campaign(self) -> None:
        """A campaign cut short after a session: a call that hangs (an etcd member gone silent) must not
        keep this broker from standing again (one campaign runs at a time)."""
        try:
            await asyncio.wait_for(self.campaign(), self.ttl_s)
        except asyncio.TimeoutError:
            log.warning("controller election timed out", extra={"event": "controller_campaign_timeout"})

    async def campaign(self) -> bool:
        """Take the controller key if nobody holds it; True when this broker is (now) the controller.

        The key is read back in the same transaction, won or not, and counts as won when this broker's
        lease holds it: an earlier campaign whose answer was lost (a timeout, a stream cut mid-call) may
        have taken it, and a key held by this broker's own lease but not believed won would keep every
        broker, this one included, from ever acting as controller while the lease is renewed."""
        if not self.alive or self._lease is None:
            return False
        key = controller_key(self.cluster)
        tx = self.client.transactions
        value = json.dumps({"broker_id": self.broker_id}).encode()
        lease = self._lease.id
        try:
            _, responses = await self.client.transaction(
                compare=[tx.create(key) == 0],
                success=[tx.put(key, value, lease=lease), tx.get(key)],
                failure=[tx.get(key)],
            )
        except Exception as exc:
            log.warning("controller election failed: %s", exc)
            return False
        held = responses[-1][0][1] if responses and responses[-1] else None
        if held is None or held.lease != lease:
            return self.is_controller
        if self.controller_epoch == held.create_revision:
            return self.is_controller
        self.controller_epoch = held.create_revision
        log.info(
            "controller elected",
            extra={
                "event": "controller_elected",
                "broker_id": self.broker_id,
                "controller_epoch": self.controller_epoch,
            },
        )
        return True

    async def fenced(self, operations: Sequence[Any], compare: Sequence[Any] = ()) -> bool:
        """Apply etcd operations as the controller: in one transaction that lands only while the
        controller key is still the one this broker created (and every `compare` holds). False
        (nothing written) once deposed, or when a compare failed."""
        if not self.is_controller:
            return False
        tx = self.client.transactions
        fence = tx.create(controller_key(self.cluster)) == self.controller_epoch
        done, _ = await self.client.transaction(compare=[fence, *compare], success=list(operations), failure=[])
        if not done and compare:  # which compare failed? re-check the fence alone
            still, _ = await self.client.transaction(compare=[fence], success=[], failure=[])
            if not still:
                self.controller_epoch = None
        elif not done:
            self.controller_epoch = None
        return bool(done)


async def cluster_status(client: Any, cluster: str) -> ClusterStatus:
    """The registered brokers and the controller, as etcd has them now."""
    brokers = []
    controller_id = controller_epoch = None
    for kv in await client.get_prefix(prefix(cluster)):
        key, meta = kv.key[len(prefix(cluster)) :], kv
        try:
            doc = json.loads(kv.value)
        except ValueError:
            continue  # not ours to judge here
        if key.startswith(b"brokers/") and key[len(b"brokers/") :].isdigit():
            brokers.append(
                BrokerInfo(
                    int(key[len(b"brokers/") :]),
                    doc.get("endpoint", "?"),
                    doc.get("incarnation", "?"),
                    meta.create_revision,
                    str(doc.get("storage", "")),
                    str(doc.get("kafka", "")),
                )
            )
        elif key == b"controller":
            controller_id, controller_epoch = doc.get("broker_id"), meta.create_revision
    return ClusterStatus(sorted(brokers, key=lambda b: b.broker_id), controller_id, controller_epoch)


def _endpoint_of(holder: Any) -> str:
    try:
        return str(json.loads(holder.value).get("endpoint", "?"))
    except (AttributeError, ValueError):
        return "?"
