"""Installed distributions made on the spot: a ``.dist-info`` folder and modules in a directory on ``sys.path``.

``importlib.metadata`` finds them exactly as it finds a wheel pip installed,
so the registry is tested against real metadata, in process, in milliseconds.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from db_core import registry


@dataclass
class SitePackages:
    """A directory on ``sys.path`` to install made-up distributions into."""

    path: Path

    def install(self, name: str, version: str, connectors: dict[str, str], modules: dict[str, str]) -> None:
        """``name`` ``version`` with ``connectors`` (entry-point name to ``module:Class``) and ``modules`` (source)."""
        info = self.path / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
        lines = "".join(f"{key} = {target}\n" for key, target in connectors.items())
        (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n{lines}", encoding="utf-8")
        for module, source in modules.items():
            (self.path / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        forget_discovery()


def forget_discovery() -> None:
    """Make the registry discover again, as a new process would."""
    registry._discover.cache_clear()
    registry._loaded.clear()


@pytest.fixture
def site_packages(tmp_path: Path) -> Iterator[SitePackages]:
    """A fresh directory on ``sys.path``; removed afterwards with every module imported from it."""
    path = tmp_path / "site-packages"
    path.mkdir()
    sys.path.insert(0, str(path))
    try:
        yield SitePackages(path)
    finally:
        sys.path.remove(str(path))
        for name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", None) or "").startswith(str(path)):
                del sys.modules[name]
        forget_discovery()
