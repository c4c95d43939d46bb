"""``db init``: the questions of a new project's database layer, and the files their answers become.

The questions are the original design's four (backend, FastAPI, unit of work,
pool settings) and the connection details, asked with the standard library
only (:func:`input`, :func:`getpass.getpass` for the password). Every answer is
checked by :class:`~db_core.settings.DatabaseSettings` itself, so the rules are
the settings' own. Nothing is written before the last answer: a ``.env`` (mode
0600, written atomically), optionally a backup of the one it replaces, and
optionally an example module.
"""

from __future__ import annotations

import getpass
import os
import secrets
import sys
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from db_core.errors import ConfigurationError
from db_core.settings import _derive, _Scope

__all__ = [
    "BACKENDS",
    "Answers",
    "InitError",
    "ask",
    "backup_name",
    "check_target",
    "env_lines",
    "env_text",
    "example_text",
    "install_line",
    "normalise_backend",
    "quote_env_value",
    "setting_error",
    "write_private_file",
]

BACKENDS = ("postgres", "mysql", "sqlite")
_ALIASES = {"postgresql": "postgres", "pg": "postgres", "mariadb": "mysql", "sqlite3": "sqlite"}
_DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306}
# The backends' own pool defaults (DatabaseSettings leaves them unset and the connector decides).
_DEFAULT_POOLS = {"postgres": (10, 20), "mysql": (10, 20), "sqlite": (1, 0)}
# Validation on the values given alone: neither the environment nor a .env takes part.
_ARGUMENTS_ONLY = _Scope(arguments_only=True)
_T = TypeVar("_T")


class InitError(Exception):
    """A problem ``db init`` reports in one line: an existing file (status 1), an invalid flag (status 2)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Answers:
    """What ``db init`` was told; ``None`` where nothing was said (yet)."""

    backend: str | None = None
    fastapi: bool | None = None
    unit_of_work: bool | None = None
    pool_size: int | None = None
    max_overflow: int | None = None
    host: str | None = None
    port: int | None = None
    name: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    example: Path | None = None

    def default_pool(self) -> tuple[int, int]:
        """The backend's pool size and max overflow."""
        return _DEFAULT_POOLS[self.backend or "postgres"]


def normalise_backend(text: str) -> str | None:
    """``postgres``, ``mysql`` or ``sqlite`` for one of them or an alias, any case; else ``None``."""
    word = text.strip().lower()
    word = _ALIASES.get(word, word)
    return word if word in BACKENDS else None


def setting_error(values: Mapping[str, object]) -> str | None:
    """``None`` when :class:`DatabaseSettings` accepts ``values``, else its reason, on one line.

    The reason names the variable and, for the password, shows ``***``.
    """
    try:
        _derive(_ARGUMENTS_ONLY, dict(values))
    except ConfigurationError as exc:
        return " ".join(line.strip() for line in str(exc).splitlines()[1:]) or str(exc)
    return None


# -- the whole command -----------------------------------------------------------------------------------------


def run(answers: Answers, *, env_file: Path, force: bool, interactive: bool, password_stdin: bool) -> Answers:
    """``db init`` up to the check: ask (or take the defaults), write the files, print the summary.

    Raises :class:`InitError` before asking anything when a file exists
    (without ``force``) or a flag is invalid; KeyboardInterrupt and EOFError
    come through, and leave no file behind.
    """
    check_target(env_file, force=force, what="env file")
    if answers.example is not None:
        check_target(answers.example, force=force, what="example module", env_file=env_file)
    reason = setting_error(_setting_values(answers, given_only=True))
    if reason is not None:
        raise InitError(reason, status=2)
    if password_stdin:
        if sys.stdin.isatty():
            raise InitError("--password-stdin reads the password from a pipe, not a terminal", status=2)
        answers.password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    elif not interactive and answers.password is None:
        answers.password = next((v for k, v in os.environ.items() if k.upper() == "DB_PASSWORD"), None)
    if answers.password is not None:
        reason = _line_error(answers.password) or setting_error({"password": answers.password})
        if reason is not None:
            raise InitError(reason, status=2)
    if interactive:
        print(
            "db init: the DB_* settings of this project, written to a .env file at the end "
            "(Ctrl-C: nothing is written)",
            flush=True,
        )
        ask(answers, env_file=env_file, force=force)
    _take_defaults(answers)
    reason = setting_error(_setting_values(answers, given_only=False))
    if reason is not None:
        raise InitError(reason, status=2)
    _write(answers, env_file=env_file, force=force)
    return answers


def _take_defaults(answers: Answers) -> None:
    answers.backend = answers.backend or "postgres"
    answers.fastapi = True if answers.fastapi is None else answers.fastapi
    answers.unit_of_work = True if answers.unit_of_work is None else answers.unit_of_work


def _setting_values(answers: Answers, *, given_only: bool) -> dict[str, object]:
    """The settings' field names and values of the answers (only those given, or all that the file gets)."""
    if given_only:
        values: dict[str, object] = {
            "type": answers.backend,
            "host": answers.host,
            "port": answers.port,
            "name": answers.name,
            "user": answers.user,
            "pool_size": answers.pool_size,
            "max_overflow": answers.max_overflow,
        }
        return {key: value for key, value in values.items() if value is not None}
    return {name.removeprefix("DB_").lower(): value for name, value in env_lines(answers)}


def _write(answers: Answers, *, env_file: Path, force: bool) -> None:
    env_exists = env_file.exists()
    if env_exists:  # only with force: check_target refused it otherwise
        write_private_file(backup_name(env_file), env_file.read_bytes(), replace=True)
    write_private_file(env_file, env_text(answers).encode("utf-8"), replace=force)
    secret = "; it holds the password: keep it out of version control" if answers.backend != "sqlite" else ""
    print(f"wrote {env_file} (mode 0600{secret})", flush=True)
    if env_exists:
        print(f"  the old one is kept as {backup_name(env_file)} (mode 0600)")
    for name, value in env_lines(answers):
        shown = "***" if name == "DB_PASSWORD" and value else value
        print(f"  {name}={shown}")
    if answers.example is not None:
        example = answers.example
        if example.exists():
            write_private_file(backup_name(example), example.read_bytes(), replace=True)
        text = example_text(answers, module=example.stem)
        write_private_file(example, text.encode("utf-8"), replace=force, mode=0o644)
        run_it = f"uvicorn {example.stem}:app" if answers.fastapi else f"python {example}"
        print(f"wrote {example}: run it with {run_it}")
    print(f"install: {install_line(answers)}")
    for note in _overridden(answers):
        print(f"note: {note}")
    print(flush=True)


def _overridden(answers: Answers) -> list[str]:
    """The environment's DB_* variables that win over the file's values (their values are not shown)."""
    environment = {key.upper(): value for key, value in os.environ.items()}
    notes = [
        f"{name} is set in the environment, which wins over {name} in the file"
        for name, value in env_lines(answers)
        if name in environment and environment[name] != value
    ]
    notes += [
        f"{url} is set in the environment: the application uses its parts, not the file's"
        for url in ("DB_URL", "DATABASE_URL")
        if environment.get(url)
    ]
    return notes


# -- the questions ------------------------------------------------------------------------------------------------


def ask(
    answers: Answers,
    *,
    env_file: Path,
    force: bool,
    read: Callable[[str], str] = input,
    read_secret: Callable[[str], str] = getpass.getpass,
) -> Answers:
    """Ask every question ``answers`` leaves open, at a terminal; returns the completed answers.

    An empty answer takes the default shown in brackets; an invalid one is
    asked again with its reason. KeyboardInterrupt and EOFError come through.
    """
    if answers.backend is None:
        answers.backend = _ask(read, f"database backend ({', '.join(BACKENDS)})", "postgres", _parse_backend)
    backend = answers.backend
    if answers.fastapi is None:
        answers.fastapi = _ask(read, "FastAPI integration? (yes/no)", "yes", _parse_yes_no)
    if answers.unit_of_work is None:
        answers.unit_of_work = _ask(read, "unit of work? (yes/no)", "yes", _parse_yes_no)
    pool, overflow = answers.default_pool()
    if answers.pool_size is None and answers.max_overflow is None:
        custom = _ask(
            read,
            f"pool settings: defaults (pool size {pool}, max overflow {overflow}) or custom?",
            "defaults",
            _parse_pool_choice,
        )
        if custom:
            answers.pool_size = _ask(read, "  pool size", str(pool), _setting_parser("pool_size", int))
            answers.max_overflow = _ask(read, "  max overflow", str(overflow), _setting_parser("max_overflow", int))
    if backend == "sqlite":
        if answers.name is None:
            answers.name = _ask(read, "database file", "app.db", _setting_parser("name", str))
    else:
        if answers.host is None:
            answers.host = _ask(read, "host", "localhost", _setting_parser("host", str))
        if answers.port is None:
            answers.port = _ask(read, "port", str(_DEFAULT_PORTS[backend]), _setting_parser("port", int))
        if answers.name is None:
            answers.name = _ask(read, "database name", "app", _setting_parser("name", str))
        if answers.user is None:
            answers.user = _ask(read, "user", "app", _setting_parser("user", str))
        if answers.password is None:
            answers.password = _ask_password(read_secret)
    if answers.example is None and _ask(read, "write an example module? (yes/no)", "no", _parse_yes_no):
        answers.example = _ask(read, "  example module file", "app.py", _example_parser(env_file, force))
    return answers


class _Invalid(ValueError):
    """An answer to ask again, with the reason."""


def _ask(read: Callable[[str], str], question: str, default: str, parse: Callable[[str], _T]) -> _T:
    while True:
        text = read(f"{question} [{default}]: ").strip() or default
        try:
            return parse(text)
        except _Invalid as exc:
            print(f"  {exc}", file=sys.stderr, flush=True)


def _ask_password(read_secret: Callable[[str], str]) -> str:
    while True:
        password = read_secret("password (hidden, not echoed; empty for none): ")
        reason = _line_error(password) or setting_error({"password": password})
        if reason is None:
            return password
        print(f"  {reason}", file=sys.stderr, flush=True)


def _parse_backend(text: str) -> str:
    backend = normalise_backend(text)
    if backend is None:
        raise _Invalid(f"choose one of {', '.join(BACKENDS)}")
    return backend


def _parse_yes_no(text: str) -> bool:
    word = text.lower()
    if word in ("y", "yes"):
        return True
    if word in ("n", "no"):
        return False
    raise _Invalid("answer yes or no")


def _parse_pool_choice(text: str) -> bool:
    word = text.lower()
    if word in ("d", "default", "defaults"):
        return False
    if word in ("c", "custom"):
        return True
    raise _Invalid("answer defaults or custom")


def _setting_parser(setting: str, kind: Callable[[str], _T]) -> Callable[[str], _T]:
    def parse(text: str) -> _T:
        value: object = text
        with suppress(ValueError):
            value = kind(text)  # a number is shown as one in the reason
        reason = _line_error(text) or setting_error({setting: value})
        if reason is not None:
            raise _Invalid(reason)
        return kind(text)

    return parse


def _example_parser(env_file: Path, force: bool) -> Callable[[str], Path]:
    def parse(text: str) -> Path:
        path = Path(text)
        try:
            check_target(path, force=force, what="example module", env_file=env_file)
        except InitError as exc:
            raise _Invalid(str(exc)) from None
        return path

    return parse


def _line_error(text: str) -> str | None:
    if "\n" in text or "\r" in text:
        return "it must be one line"
    return None


def check_target(path: Path, *, force: bool, what: str, env_file: Path | None = None) -> None:
    """Raise :class:`InitError` unless ``path`` may be written: its directory exists, and it does not (or ``force``)."""
    if not path.parent.is_dir():
        raise InitError(f"{what} {path}: the directory {path.parent} does not exist")
    if path.is_dir():
        raise InitError(f"{what} {path} is a directory")
    if env_file is not None and path.resolve() == env_file.resolve():
        raise InitError(f"{what} {path} is the env file")
    if not force and (path.exists() or path.is_symlink()):
        keep = f"--force replaces it, keeping the old one as {backup_name(path)}"
        raise InitError(f"{path} exists; kept it unchanged ({keep})")


# -- the files ----------------------------------------------------------------------------------------------------


def env_lines(answers: Answers) -> list[tuple[str, str]]:
    """The ``DB_*`` variables of the answers, in order: the pool only where it differs from the backend's default."""
    backend = answers.backend or "postgres"
    lines = [("DB_TYPE", backend)]
    if backend != "sqlite":
        lines += [
            ("DB_HOST", answers.host or "localhost"),
            ("DB_PORT", str(answers.port or _DEFAULT_PORTS[backend])),
            ("DB_NAME", answers.name or "app"),
            ("DB_USER", answers.user if answers.user is not None else "app"),
            ("DB_PASSWORD", answers.password or ""),
        ]
    else:
        lines.append(("DB_NAME", answers.name or "app.db"))
    pool, overflow = answers.default_pool()
    if answers.pool_size is not None and answers.pool_size != pool:
        lines.append(("DB_POOL_SIZE", str(answers.pool_size)))
    if answers.max_overflow is not None and answers.max_overflow != overflow:
        lines.append(("DB_MAX_OVERFLOW", str(answers.max_overflow)))
    return lines


def quote_env_value(value: str) -> str:
    r"""``value`` as python-dotenv (and so :class:`DatabaseSettings`) reads it back exactly.

    Single quotes, with ``\\`` and ``'`` escaped. python-dotenv expands
    ``${NAME}`` even there, and has no escape for it: each ``${`` is written
    ``${:-$}{``, an unset variable whose default is a ``$``.
    """
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("${", "${:-$}{")
    return f"'{escaped}'"


def env_text(answers: Answers) -> str:
    """The whole ``.env``: a header saying what wrote it and that it holds a secret, then the variables."""
    pool, overflow = answers.default_pool()
    secret = "It holds the database password" if answers.backend != "sqlite" else "A password would go here"
    out = [
        "# The database settings of this project (DB_* variables, read by db_core.DatabaseSettings),",
        f"# written by `db init`. {secret}: keep it out of version control",
        "# (add .env to .gitignore) and readable by its owner only (mode 0600).",
        "# Variables set in the environment win over this file. All settings: the db-core README.",
    ]
    out += [f"{name}={quote_env_value(value)}" for name, value in env_lines(answers)]
    names = {name for name, _ in env_lines(answers)}
    if "DB_POOL_SIZE" not in names:
        out.append(f"# DB_POOL_SIZE={pool}")
    if "DB_MAX_OVERFLOW" not in names:
        out.append(f"# DB_MAX_OVERFLOW={overflow}")
    return "\n".join(out) + "\n"


def install_line(answers: Answers) -> str:
    """The ``pip install`` line for the choices: the backend's extra, and ``fastapi`` if chosen."""
    extras = [answers.backend or "postgres"] + (["fastapi"] if answers.fastapi else [])
    return f'pip install "db-core[{",".join(extras)}]"'


_FASTAPI_EXAMPLE = '''\
"""An example FastAPI application on db-core, written by `db init`.

Run it: uvicorn {module}:app   (the DB_* settings come from .env)
"""

from fastapi import FastAPI
from sqlalchemy import text

{imports}from db_fastapi import TransactionDep, db_lifespan

# Disposes of the pooled connections at shutdown.
app = FastAPI(lifespan=db_lifespan())


@app.get("/")
async def index(session: TransactionDep) -> dict[str, int]:
    """One transaction per request: committed before the response is sent, rolled back on an error."""
    value = await session.scalar(text("SELECT 1"))
    return {{"select_1": int(value)}}
'''

_FASTAPI_UNIT_OF_WORK = '''\


@app.get("/report")
async def report() -> dict[str, int]:
    """A unit of work of its own, as a job or a script opens one: commit on success, rollback on an error."""
    async with UnitOfWork() as session:
        value = await session.scalar(text("SELECT 2"))
    return {"select_2": int(value)}
'''

_SCRIPT_EXAMPLE = '''\
"""An example script on db-core, written by `db init`.

Run it: python {module}.py   (the DB_* settings come from .env)
"""

import asyncio

from sqlalchemy import text

from db_core import {name}


async def main() -> None:
    async with {opener} as session:  # {comment}
        value = await session.scalar(text("SELECT 1"))
    print(f"SELECT 1 -> {{value}}")


if __name__ == "__main__":
    asyncio.run(main())  # the engine is disposed of when the loop ends
'''


def example_text(answers: Answers, module: str = "app") -> str:
    """A short module using the chosen integrations: a FastAPI app, or a script."""
    if answers.fastapi:
        imports = "from db_core import UnitOfWork\n" if answers.unit_of_work else ""
        text = _FASTAPI_EXAMPLE.format(module=module, imports=imports)
        return text + (_FASTAPI_UNIT_OF_WORK if answers.unit_of_work else "")
    if answers.unit_of_work:
        return _SCRIPT_EXAMPLE.format(
            module=module, name="UnitOfWork", opener="UnitOfWork()", comment="commit on success, rollback on an error"
        )
    return _SCRIPT_EXAMPLE.format(
        module=module, name="get_sessionmaker", opener="get_sessionmaker()()", comment="a session you commit yourself"
    )


def backup_name(path: Path) -> Path:
    """Where ``--force`` keeps the file it replaces: ``PATH.bak``."""
    return path.with_name(path.name + ".bak")


def write_private_file(path: Path, data: bytes, *, replace: bool, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically, with ``mode``: all of it or nothing, also on KeyboardInterrupt.

    A temporary file in the same directory, created with ``O_EXCL`` and
    ``mode`` (so never readable by others, not even for a moment), synced and
    then renamed over ``path``; without ``replace`` it is linked instead, which
    fails if ``path`` appeared meanwhile (:class:`InitError`).
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(temporary, flags, mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            if hasattr(os, "fchmod"):  # POSIX: exactly mode, whatever the umask
                os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise InitError(f"{path} exists; kept it unchanged (--force replaces it)") from None
            os.unlink(temporary)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Make the rename durable (best effort: not every platform opens directories)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
