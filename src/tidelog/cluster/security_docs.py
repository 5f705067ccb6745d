"""A cluster's users and ACLs, kept in its etcd under `/tidelog/<cluster>/security/users` and
`.../security/acls`: the same JSON documents as the users and ACL files, so that every broker applies
the same ones (it reads them with the rest of its snapshot, within a second of a change).

`tidelog users` and `tidelog acls` change them with `--etcd`: the document is copied to a private
temporary file, changed there by the same code that changes the files (so there is one format and one
set of rules), and written back only if the key has not changed since it was read (a compare on its
mod_revision); two commands at once never lose each other's change. Event-loop only (aetcd calls).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import ClusterUnavailableError
from .membership import prefix

T = TypeVar("T")
USERS, ACLS = "users", "acls"
ATTEMPTS = 5
REPAIR = "delete the key (etcdctl del KEY) and add its entries again with `tidelog users|acls ... --etcd URL`"
"""What to do with a damaged document: brokers keep what they read before it until then."""


def document_key(cluster: str, document: str) -> bytes:
    return prefix(cluster) + b"security/" + document.encode()


def where(cluster: str, document: str) -> str:
    """How an error names a document: its etcd key."""
    return (
        f"the {'users' if document == USERS else 'ACL'} document in etcd ({document_key(cluster, document).decode()})"
    )


async def change(
    client: Any, cluster: str, document: str, edit: Callable[[str], T], parse: Callable[[bytes, str, str], Any]
) -> T:
    """edit(path of a private copy of the document, absent when etcd has none) changes it as a file; the
    change is stored unless the key changed meanwhile (then read and edited again). Returns edit's result.
    parse(raw, where, repair) checks the stored document first: a damaged one is refused naming its key."""
    key = document_key(cluster, document)
    tx = client.transactions
    for _ in range(ATTEMPTS):
        found = await client.get(key)
        if found is not None:
            parse(bytes(found.value), where(cluster, document), REPAIR)
        with tempfile.TemporaryDirectory(prefix="tidelog-security-") as private:  # mode 0700
            path = os.path.join(private, f"{document}.json")
            if found is not None:
                with open(path, "wb") as f:
                    f.write(found.value)
            result = edit(path)
            if not os.path.exists(path):
                return result  # read, nothing written (a listing of an empty document)
            with open(path, "rb") as f:
                changed = f.read()
        if found is not None and changed == found.value:
            return result  # unchanged: nothing to store
        compare = [tx.mod(key) == found.mod_revision] if found is not None else [tx.create(key) == 0]
        done, _ = await client.transaction(compare=compare, success=[tx.put(key, changed)], failure=[])
        if done:
            return result
    raise ClusterUnavailableError(f"the {document} document kept changing under this command; run it again")
