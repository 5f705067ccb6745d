"""Commands that work on a cluster's etcd directly (elections, reassignment): one connection, a bound
on the time, and each failure as one line with the right exit code."""

from __future__ import annotations

from .failures import CommandError, UsageError


def with_etcd(url: str, work, what: str, timeout_s: float = 15):
    """Run `await work(client)` against the cluster's etcd at url (15 s at most by default): a bad URL
    is a usage error, a tidelog error or an unreachable etcd a runtime error (one line each)."""
    import asyncio

    from ..cluster import etcd
    from ..errors import InvalidConfigError, TidelogError

    try:
        client = etcd.connect(url)
    except InvalidConfigError as exc:
        raise UsageError(exc.message) from None

    async def run():
        try:
            return await work(client)
        finally:
            await client.close()

    try:
        return asyncio.run(asyncio.wait_for(run(), timeout_s))
    except TidelogError as exc:
        raise CommandError(exc.message) from None
    except CommandError:
        raise
    except (Exception, asyncio.TimeoutError) as exc:  # aetcd's own errors for an unreachable etcd
        raise CommandError(f"cannot {what} at {url}: {exc or 'timed out'}") from None
