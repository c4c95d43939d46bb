"""The connector registry: ``DB_TYPE`` to a :class:`~db_core.connector.DBConnector`.

Backends are found through the entry-point group ``db_core.connectors``; the
entry point's name is the ``DB_TYPE`` it answers to. Well-known spellings are
aliases (``postgresql`` and ``pg`` for ``postgres``, ``mariadb`` for
``mysql``); a distribution may also point several entry points at one class,
and the alphabetically first is then its name. Discovery reads only metadata
and is cached; a connector's module is imported when it is first selected.
This module is the only seam between db_core and the backends.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from importlib import metadata
from importlib.metadata import EntryPoint, entry_points

from db_core.connector import API_VERSION, DBConnector
from db_core.errors import ConnectorLoadError, ConnectorNotFoundError
from db_core.settings import DatabaseSettings

__all__ = [
    "DEFAULT_TYPE",
    "ENTRY_POINT_GROUP",
    "ConnectorInfo",
    "available_connectors",
    "get_connector",
    "register_connector",
    "resolve_connector",
    "unregister_connector",
]

ENTRY_POINT_GROUP = "db_core.connectors"
DEFAULT_TYPE = "postgres"

# Other names users (and URL schemes) give the first-party backends.
_ALIASES = {"postgresql": "postgres", "pg": "postgres", "mariadb": "mysql", "sqlite3": "sqlite"}
# The extras db-core itself declares, so a missing first-party backend gets an exact install line.
_EXTRAS = {"postgres": "postgres", "mysql": "mysql", "sqlite": "sqlite"}


@dataclass(frozen=True)
class ConnectorInfo:
    """An installed connector, as its metadata describes it (nothing is imported)."""

    name: str
    aliases: tuple[str, ...]
    target: str
    """``module:attribute`` of the connector class."""
    distribution: str | None
    version: str | None

    @property
    def origin(self) -> str:
        """``distribution version``, or ``registered in code`` for :func:`register_connector`."""
        if self.distribution is None:
            return "registered in code"
        return f"{self.distribution} {self.version}"


_lock = threading.Lock()
_registered: dict[str, tuple[type[DBConnector], ConnectorInfo]] = {}
_loaded: dict[str, type[DBConnector]] = {}


@functools.cache
def _discover() -> tuple[dict[str, EntryPoint], tuple[ConnectorInfo, ...]]:
    by_name: dict[str, EntryPoint] = {}
    by_target: dict[tuple[str | None, str], list[EntryPoint]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        key = ep.name.strip().lower()
        by_name.setdefault(key, ep)
        dist = ep.dist.name if ep.dist else None
        by_target.setdefault((dist, ep.value), []).append(ep)
    infos = []
    for (dist, target), eps in by_target.items():
        names = sorted(ep.name.strip().lower() for ep in eps)
        names += [alias for alias, name in _ALIASES.items() if name == names[0] and alias not in by_name]
        version = eps[0].dist.version if eps[0].dist else None
        infos.append(ConnectorInfo(names[0], tuple(names[1:]), target, dist, version))
    return by_name, tuple(sorted(infos, key=lambda i: i.name))


def available_connectors() -> list[ConnectorInfo]:
    """Every installed and registered connector, by name, without importing any of them."""
    infos = {info.name: info for info in _discover()[1]}
    infos.update({name: info for name, (_cls, info) in _registered.items() if name == info.name})
    return sorted(infos.values(), key=lambda i: i.name)


def register_connector(name: str, connector: type[DBConnector], *, aliases: tuple[str, ...] = ()) -> None:
    """Make ``connector`` answer to ``name`` (and ``aliases``) without an entry point.

    Meant for tests and frozen applications; it takes precedence over an
    installed connector of the same name.
    """
    _checked(name, connector, "registered in code")
    info = ConnectorInfo(name.lower(), tuple(a.lower() for a in aliases), _target(connector), None, None)
    with _lock:
        for key in (info.name, *info.aliases):
            _registered[key] = (connector, info)


def unregister_connector(name: str) -> None:
    """Undo :func:`register_connector` for ``name`` and its aliases."""
    with _lock:
        entry = _registered.get(name.lower())
        if entry is not None:
            for key in (entry[1].name, *entry[1].aliases):
                _registered.pop(key, None)


def resolve_connector(name: str) -> type[DBConnector]:
    """The connector class for ``name`` (any case, aliases allowed), imported on first use.

    Raises :class:`~db_core.errors.ConnectorNotFoundError` if no connector has
    this name, and :class:`~db_core.errors.ConnectorLoadError` if it fails to
    import or implements another connector API version.
    """
    key = name.strip().lower()
    key = key if key in _registered or key in _discover()[0] else _ALIASES.get(key, key)
    if key in _registered:
        return _registered[key][0]
    if key in _loaded:
        return _loaded[key]
    ep = _discover()[0].get(key)
    if ep is None:
        installed = [i.name for i in available_connectors()]
        raise ConnectorNotFoundError(key, installed, _install_hint(key))
    origin = f"{ep.dist.name} {ep.dist.version}" if ep.dist else f"entry point {ep.value}"
    try:
        obj = ep.load()
    except Exception as exc:
        raise ConnectorLoadError(key, origin, f"{type(exc).__name__}: {exc}") from exc
    loaded = _checked(key, obj, origin)
    with _lock:
        _loaded[key] = loaded
    return loaded


def get_connector(settings: DatabaseSettings) -> DBConnector:
    """The connector for ``settings.type``, built with ``settings`` (the seed's factory)."""
    name = default_type(settings)
    try:
        connector = resolve_connector(name)
    except ConnectorNotFoundError as exc:
        if settings.type:
            raise
        raise ConnectorNotFoundError(exc.name, exc.installed, exc.install_hint, defaulted=True) from None
    return connector(settings)


def default_type(settings: DatabaseSettings) -> str:
    """``DB_TYPE`` (or ``DB_URL``'s scheme), else the only installed connector, else ``postgres``."""
    if settings.type:
        return settings.type
    installed = available_connectors()
    return installed[0].name if len(installed) == 1 else DEFAULT_TYPE


def _install_hint(key: str) -> str | None:
    extra = _EXTRAS.get(key)
    if extra is None:
        return None
    hint = f'pip install "db-core[{extra}]"'
    try:
        # The package index holds unrelated projects with our names (db-mysql 0.1.x).
        other = metadata.distribution(f"db-{extra}")
    except metadata.PackageNotFoundError:
        return hint
    return (
        f"{hint} (the installed db-{extra} {other.version} registers no db_core connector: "
        f"it is another project of the same name; uninstall it first)"
    )


def _checked(name: str, obj: object, origin: str) -> type[DBConnector]:
    if not (isinstance(obj, type) and issubclass(obj, DBConnector)):
        raise ConnectorLoadError(name, origin, f"{obj!r} is not a db_core.DBConnector subclass")
    if obj.api_version != API_VERSION:
        raise ConnectorLoadError(
            name,
            origin,
            f"it implements connector API version {obj.api_version}, but this db-core implements "
            f"version {API_VERSION}; install versions of the two that match",
        )
    return obj


def _target(connector: type[DBConnector]) -> str:
    return f"{connector.__module__}:{connector.__qualname__}"
