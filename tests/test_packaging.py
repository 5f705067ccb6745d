"""What installing tidelog brings along: its runtime dependencies and everything they depend on."""

from __future__ import annotations

import pathlib
import re
from importlib import metadata

from packaging.requirements import Requirement

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure() -> set[str]:
    """Every distribution `pip install tidelog` installs (for this Python), from the installed metadata."""
    todo = list(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    seen: set[str] = set()
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # another Python's, or an extra's
        name = _canonical(req.name)
        if name in seen:
            continue
        seen.add(name)
        todo += metadata.requires(req.name) or []
    return seen


def test_installing_tidelog_pulls_in_no_build_tools():
    # Before: hdrhistogram (for `tidelog bench` percentiles) brought pbr and an upgraded setuptools.
    closure = runtime_closure()
    assert "numpy" in closure and "grpcio" in closure
    assert not closure & {"pbr", "setuptools", "wheel", "cython", "hdrhistogram"}, sorted(closure)
