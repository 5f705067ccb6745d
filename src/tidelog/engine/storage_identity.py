"""The identity of a data directory: a random id made the first time the directory is opened and kept
in `meta/storage.json` (checked JSON).

A cluster records, with every in-sync replica, the id of the directory it was in sync from. A broker
restarted on an emptied (or replaced) disk comes back under the same broker id with a new storage id,
so the cluster can tell it has lost what it once held and must not lead before it has caught up again.
A damaged file is refused, not replaced: a new id would be safe (the replicas catch up again), but the
damage may not stop at this file, and the operator decides (removing the file makes the directory new
storage).
"""

from __future__ import annotations

import logging
import os
import secrets

from ..errors import CorruptLogError
from ..storage import checked_json
from ..storage.fs import FileSystem

log = logging.getLogger("tidelog.engine")

STORAGE_FILE = os.path.join("meta", "storage.json")


def load_or_create(fs: FileSystem, data_dir: str) -> str:
    """The directory's storage id, made (durably) if the directory has none yet."""
    path = os.path.join(data_dir, STORAGE_FILE)
    if fs.exists(path):
        try:
            doc = checked_json.decode(fs.read_file(path))
            storage_id = doc["storage_id"]
            if not isinstance(storage_id, str) or not storage_id:
                raise checked_json.DamagedDocument("its storage_id is not a non-empty string")
        except (checked_json.DamagedDocument, KeyError) as exc:
            raise CorruptLogError(
                f"{path} is damaged ({exc}): the data directory's identity cannot be read. Remove the file "
                "to open the directory as new storage (in a cluster its replicas then catch up before they "
                "count as in sync again)"
            ) from None
        return storage_id
    storage_id = secrets.token_hex(16)
    fs.makedirs(os.path.dirname(path))
    fs.write_file_atomic(path, checked_json.encode({"storage_id": storage_id}))
    log.info("storage id created", extra={"event": "storage_id_created", "storage_id": storage_id})
    return storage_id
