"""Where `tidelog users` and `tidelog acls` keep what they change: a file (a single broker's
--users-file, --acls-file), or a cluster's etcd (`--etcd URL`: brokers started with --etcd-users,
--etcd-acls), changed there by the same file code (cluster/security_docs.py)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any, TypeVar

from .failures import UsageError

T = TypeVar("T")


def add_store_options(parser: argparse.ArgumentParser, document: str, file_help: str) -> None:
    """--users-file / --acls-file (`document`: users or acls), --etcd and --cluster-name."""
    parser.add_argument(f"--{document}-file", metavar="FILE", help=file_help)
    parser.add_argument(
        "--etcd",
        metavar="etcd://HOST:PORT[,...]",
        help=f"a cluster's etcd instead of a file: the {document} every broker started with --etcd-{document} "
        "applies, within a second (default: a file)",
    )
    parser.add_argument("--cluster-name", default="tidelog", help="the cluster's name in etcd (with --etcd)")


def in_store(
    args: argparse.Namespace,
    document: str,
    open_file: Callable[[str], Any],
    parse: Callable[[bytes, str, str], Any],
    work: Callable[[Any], T],
) -> T:
    """work(the users or ACL file) on the file given, or on the cluster's document in etcd (a change is
    stored only if nobody changed the document meanwhile; parse checks what etcd holds first)."""
    path = getattr(args, f"{document}_file")
    if args.etcd:
        if path:
            raise UsageError(f"give --{document}-file or --etcd, not both")
        from ..cluster import security_docs
        from .etcd_access import with_etcd

        async def change(client: Any) -> T:
            return await security_docs.change(client, args.cluster_name, document, lambda p: work(open_file(p)), parse)

        return with_etcd(args.etcd, change, f"change the {document} in etcd")
    env = f"TIDELOG_{document.upper()}_FILE"
    path = path or os.environ.get(env)
    if not path:
        raise UsageError(f"which {document} file? give --{document}-file FILE, --etcd URL, or set ${env}")
    return work(open_file(path))
