"""Compiled core (built from native/ by setup.py). There is deliberately no pure-Python fallback."""

try:
    from . import batch_scan, checksum, partition_hash, record_batch
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "tidelog's compiled extensions are missing or were built for another Python; "
        "build them with `pip install .` (or `pip install -e .`) from the source tree"
    ) from exc

__all__ = ["batch_scan", "checksum", "partition_hash", "record_batch"]
