"""`tidelog acls add|list|remove`: the ACL file a broker started with --acls-file decides by. It works on
the file directly (no broker needed); running brokers see the change within a second.
"""

from __future__ import annotations

import argparse
import json

from .failures import CommandError, UsageError
from .parsing import add_command, add_format_option
from .security_store import add_store_options, in_store

ACLS_FILE_HELP = "the ACL file (default: $TIDELOG_ACLS_FILE)"
RESOURCE_OPTIONS = ("topic", "group", "queue")


def register(commands) -> None:
    from ..security.acls import OPERATIONS

    acls = add_command(commands, "acls", "add, list and remove who may do what (ACLs)")
    actions = acls.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, summary, run in (
        ("add", "allow (or --deny) a principal an operation on a resource", add_acl),
        ("remove", "remove the ACL that matches every option given", remove_acl),
    ):
        parser = add_command(actions, name, summary)
        parser.add_argument(
            "--principal",
            required=True,
            help="a user name, group:NAME (see `tidelog users`), or * (anyone authenticated)",
        )
        parser.add_argument(
            "--operation",
            required=True,
            choices=OPERATIONS,
            help="produce, consume, create, delete and alter imply describe; all is every operation",
        )
        where = parser.add_mutually_exclusive_group(required=True)
        for resource in RESOURCE_OPTIONS:
            where.add_argument(f"--{resource}", metavar="NAME", help=f"a {resource} name (* for every {resource})")
        where.add_argument("--cluster", action="store_true", help="the cluster (list topics, groups, queues)")
        parser.add_argument("--prefix", action="store_true", help="the name is a prefix (default: the exact name)")
        parser.add_argument("--deny", action="store_true", help="a deny, which beats any allow (default: allow)")
        add_store_options(parser, "acls", ACLS_FILE_HELP)
        parser.set_defaults(run=run)
    listing = add_command(actions, "list", "list ACLs")
    listing.add_argument("--principal", help="only this principal's (default: every ACL)")
    add_store_options(listing, "acls", ACLS_FILE_HELP)
    add_format_option(listing)
    listing.set_defaults(run=list_acls)


def _acls(args: argparse.Namespace, work):
    """work(AclFile) on the ACL file given, or on the cluster's ACLs in etcd."""
    from ..security.acls import AclFile, parse_acls

    return in_store(args, "acls", AclFile, parse_acls, work)


def _acl(args: argparse.Namespace):
    from ..security.acls import CLUSTER, Acl

    if args.cluster:
        if args.prefix:
            raise UsageError("--prefix does not apply to --cluster")
        resource, name = "cluster", CLUSTER
    else:
        resource = next(r for r in RESOURCE_OPTIONS if getattr(args, r) is not None)
        name = getattr(args, resource)
    return Acl(args.principal, resource, name, args.operation, args.prefix, args.deny)


def add_acl(args: argparse.Namespace) -> int:
    acl = _acl(args)
    print(("added: " if _acls(args, lambda acls: acls.add(acl)) else "already there: ") + acl.describe())
    return 0


def remove_acl(args: argparse.Namespace) -> int:
    acl = _acl(args)
    if not _acls(args, lambda acls: acls.remove(acl)):
        raise CommandError(f"no such ACL: {acl.describe()}")
    print("removed: " + acl.describe())
    return 0


def list_acls(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    acls = [a for a in _acls(args, lambda acls: acls.load()) if args.principal in (None, a.principal)]
    if args.format == "json":
        print(json.dumps([asdict(a) for a in acls]))
        return 0
    for acl in acls:
        print(acl.describe())
    return 0
