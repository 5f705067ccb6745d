"""`tidelog users add|list|remove|rotate`: the users file a broker started with --users-file checks tokens
against. It works on the file directly (no broker needed); running brokers see the change within a second.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

from .failures import UsageError
from .parsing import add_command, add_format_option
from .security_store import add_store_options, in_store

USERS_FILE_HELP = "the users file (default: $TIDELOG_USERS_FILE)"


def register(commands) -> None:
    users = add_command(commands, "users", "add, list, remove and rotate the users tokens are checked against")
    actions = users.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = add_command(actions, "add", "add a user and print its token, once (the file keeps no secret)")
    add.add_argument("name", help="user name: letters, digits, '.', '_', '@', '-' (up to 128)")
    add.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="GROUP",
        help="a group the user belongs to: ACLs for group:GROUP apply to it (repeatable; default: none)",
    )
    _secret_options(add)
    add.set_defaults(run=add_user)

    groups = add_command(actions, "groups", "set the groups a user belongs to (none: leave every group)")
    groups.add_argument("name", help="user name")
    groups.add_argument("groups", nargs="*", metavar="GROUP", help="group names")
    add_store_options(groups, "users", USERS_FILE_HELP)
    groups.set_defaults(run=set_groups)

    rotate = add_command(actions, "rotate", "give a user a new secret and print its token; the old one stops working")
    rotate.add_argument("name", help="user name")
    _secret_options(rotate)
    rotate.set_defaults(run=rotate_user)

    remove = add_command(actions, "remove", "remove a user: its token stops working")
    remove.add_argument("name", help="user name")
    add_store_options(remove, "users", USERS_FILE_HELP)
    remove.set_defaults(run=remove_user)

    listing = add_command(actions, "list", "list users (names and dates; never secrets)")
    add_store_options(listing, "users", USERS_FILE_HELP)
    add_format_option(listing)
    listing.set_defaults(run=list_users)


def _secret_options(parser) -> None:
    add_store_options(parser, "users", USERS_FILE_HELP)
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the secret from the first line of stdin instead of generating one (256 random bits)",
    )


def _users(args: argparse.Namespace, work):
    """work(UsersFile) on the users file given, or on the cluster's users in etcd."""
    from ..security.users import UsersFile, parse_users

    return in_store(args, "users", UsersFile, parse_users, work)


def _secret(args: argparse.Namespace) -> str | None:
    if not args.password_stdin:
        return None
    secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        raise UsageError("--password-stdin: the first line of stdin is empty")
    return secret


def add_user(args: argparse.Namespace) -> int:
    secret = _secret(args)
    token = _users(args, lambda users: users.add(args.name, secret, tuple(args.group)))
    print(token)
    return 0


def set_groups(args: argparse.Namespace) -> int:
    _users(args, lambda users: users.set_groups(args.name, tuple(args.groups)))
    return 0


def rotate_user(args: argparse.Namespace) -> int:
    secret = _secret(args)
    token = _users(args, lambda users: users.rotate(args.name, secret))
    print(token)
    return 0


def remove_user(args: argparse.Namespace) -> int:
    _users(args, lambda users: users.remove(args.name))
    return 0


def list_users(args: argparse.Namespace) -> int:
    users = sorted(_users(args, lambda users: users.load()).values(), key=lambda u: u.name)
    rows = [
        {
            "name": u.name,
            "mechanisms": sorted(u.credentials),
            "created": _when(u.created_ms),
            "secret_set": _when(u.rotated_ms),
            "groups": list(u.groups),
        }
        for u in users
    ]
    if args.format == "json":
        print(json.dumps(rows))
        return 0
    print(f"{'NAME':<24} {'SECRET SET':<20} {'CREATED':<20} GROUPS")
    for row in rows:
        print(f"{row['name']:<24} {row['secret_set']:<20} {row['created']:<20} {','.join(row['groups'])}")
    return 0


def _when(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
