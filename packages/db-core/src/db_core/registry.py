"""The connector registry: ``DB_TYPE`` to a :class:`~db_core.connector.DBConnector`.

Backends are found through the entry-point group ``db_core.connectors``; the
entry point's name is the ``DB_TYPE`` it answers to. Well-known spellings are
aliases (``postgresql`` and ``pg`` for ``postgres``, ``mariadb`` for
``mysql``); a distribution may also point several entry points at one class,
and the alphabetically first is then its name. Discovery reads only metadata,
once per process, on first use (never at ``import db_core``); a connector's
module is imported when it is first selected, so one that fails to import
breaks nothing but its own selection. Two distributions claiming one name are
an error when, and only when, that name is selected.
This module is the only seam between db_core and the backends.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from importlib import metadata
from importlib.metadata import EntryPoint, entry_points

from db_core.__about__ import __version__
from db_core.connector import API_VERSION, DBConnector
from db_core.errors import AmbiguousConnectorError, ConnectorLoadError, ConnectorNotFoundError
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

    def load(self) -> type[DBConnector]:
        """Import this connector's class and check its API version.

        Unlike :func:`resolve_connector`, this loads this very distribution's
        class even when another one claims the same name.
        """
        if self.distribution is None:
            return _registered[self.name][0]
        return _load(self.name, EntryPoint(self.name, self.target, ENTRY_POINT_GROUP), self.origin)


_lock = threading.Lock()
_registered: dict[str, tuple[type[DBConnector], ConnectorInfo]] = {}
_loaded: dict[str, type[DBConnector]] = {}


@functools.cache
def _discover() -> tuple[dict[str, list[EntryPoint]], tuple[ConnectorInfo, ...]]:
    """Every entry point by name (several when distributions clash), and one info per connector class."""
    by_name: dict[str, list[EntryPoint]] = {}
    by_target: dict[tuple[str | None, str], list[EntryPoint]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        by_name.setdefault(ep.name.strip().lower(), []).append(ep)
        by_target.setdefault((_dist_name(ep), ep.value), []).append(ep)
    infos = []
    for (dist, target), eps in by_target.items():
        names = sorted(ep.name.strip().lower() for ep in eps)
        names += [alias for alias, name in _ALIASES.items() if name == names[0] and alias not in by_name]
        version = eps[0].dist.version if eps[0].dist else None
        infos.append(ConnectorInfo(names[0], tuple(names[1:]), target, dist, version))
    return by_name, tuple(sorted(infos, key=lambda i: (i.name, i.distribution or "")))


def available_connectors() -> list[ConnectorInfo]:
    """Every installed and registered connector, by name, without importing any of them.

    A name two distributions claim is listed once for each of them.
    """
    registered = {info for _cls, info in _registered.values()}
    overridden = {info.name for info in registered}
    infos = [info for info in _discover()[1] if info.name not in overridden]
    return sorted([*infos, *registered], key=lambda i: (i.name, i.distribution or ""))


def register_connector(name: str, connector: type[DBConnector], *, aliases: tuple[str, ...] = ()) -> None:
    """Make ``connector`` answer to ``name`` (and ``aliases``) without an entry point.

    Meant for tests and frozen applications; it takes precedence over installed
    connectors of the same name, which also settles a name two distributions claim.
    """
    _checked(name, connector, "registered in code", None)
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
    this name, :class:`~db_core.errors.AmbiguousConnectorError` if two
    distributions claim it, and :class:`~db_core.errors.ConnectorLoadError`
    if it fails to import or implements an incompatible connector API version.
    """
    key = _key(name)
    if key in _registered:
        return _registered[key][0]
    if key in _loaded:
        return _loaded[key]
    eps = _discover()[0].get(key)
    if not eps:
        installed = sorted({i.name for i in available_connectors()})
        raise ConnectorNotFoundError(key, installed, _install_hint(key))
    if len(eps) > 1:
        raise AmbiguousConnectorError(key, [f"{_origin(ep)} ({ep.value})" for ep in eps])
    loaded = _load(key, eps[0], _origin(eps[0]))
    with _lock:
        _loaded[key] = loaded
    return loaded


def _key(name: str) -> str:
    """The connector name ``name`` stands for.

    A URL scheme's ``dialect+driver`` names the connector called like its
    driver if one is installed (``postgresql+psycopg``), else its dialect's
    (``postgresql+psycopg2`` is PostgreSQL through this library's own driver).
    """
    key = name.strip().lower()
    dialect, plus, driver = key.partition("+")
    for candidate in (key, driver, dialect) if plus else (key,):
        if candidate and (candidate in _registered or candidate in _discover()[0]):
            return candidate
    base = dialect if plus else key
    return _ALIASES.get(base, base)


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
        f"pip uninstall db-{extra}, then install db_core's db-{extra} (the installed db-{extra} {other.version} "
        f"registers no db_core connector: it is another project of the same name, which the package index "
        f"may give again for {hint!r}; install the connector's wheel by its file name)"
    )


def _load(name: str, ep: EntryPoint, origin: str) -> type[DBConnector]:
    try:
        obj = ep.load()
    except Exception as exc:
        raise ConnectorLoadError(name, origin, f"{type(exc).__name__}: {exc}") from exc
    return _checked(name, obj, origin, _dist_name(ep))


def _checked(name: str, obj: object, origin: str, distribution: str | None) -> type[DBConnector]:
    if not (isinstance(obj, type) and issubclass(obj, DBConnector)):
        raise ConnectorLoadError(name, origin, f"{obj!r} is not a db_core.DBConnector subclass")
    declared = obj.api_version
    theirs, ours = _api_version(declared), _OUR_API
    if theirs is None:
        raise ConnectorLoadError(
            name, origin, f"its api_version {declared!r} is not a version like {API_VERSION!r}; fix the connector class"
        )
    if theirs[0] == ours[0] and theirs[1] <= ours[1]:
        return obj
    implements = f"it implements connector API {declared}, but db-core {__version__} implements {API_VERSION}"
    if theirs > ours:
        fix = 'upgrade db-core (pip install -U "db-core")'
    elif distribution is None:
        fix = f"update the connector class to connector API {API_VERSION} (see db-core's CHANGELOG)"
    else:
        fix = f'upgrade {distribution} (pip install -U "{distribution}") to a release for connector API {API_VERSION}'
    raise ConnectorLoadError(name, origin, f"{implements}: {fix}")


def _api_version(value: object) -> tuple[int, int] | None:
    """``"MAJOR.MINOR"`` (or a bare major as an int) as a tuple, ``None`` if it is neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, 0)
    if isinstance(value, str):
        major, _, minor = value.strip().partition(".")
        if major.isdigit() and (minor or "0").isdigit():
            return (int(major), int(minor or "0"))
    return None


_OUR_API = (int(API_VERSION.split(".")[0]), int(API_VERSION.split(".")[1]))


def _dist_name(ep: EntryPoint) -> str | None:
    return ep.dist.name if ep.dist else None


def _origin(ep: EntryPoint) -> str:
    return f"{ep.dist.name} {ep.dist.version}" if ep.dist else f"entry point {ep.value}"


def _target(connector: type[DBConnector]) -> str:
    return f"{connector.__module__}:{connector.__qualname__}"
