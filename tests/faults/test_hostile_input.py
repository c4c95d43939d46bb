"""Hostile ``DB_*`` input: settings load, or say which variable is wrong; an engine builds, or says why.

Hypothesis draws values for every :class:`DatabaseSettings` field (random text
with control characters and any Unicode, undecodable bytes, empty strings,
huge, negative and non-finite numbers, malformed URLs, JSON that is no object
or is nested too deeply, TLS files that are missing or no PEM) and hands them
over the three ways a user can: the environment, a ``.env`` file and
constructor arguments, several at once. For every example:

- ``DatabaseSettings(...)`` returns settings or raises ``ConfigurationError``,
  never another exception; the error names only variables that were set
  (``DB_<FIELD>``, ``DB_URL``) or the ``.env`` file that could not be read;
- the password drawn (always holding :data:`MARKER`) appears in no form in the
  error (str, repr, args, traceback, chained exceptions) nor in the settings'
  str/repr/dumps, and a password given reaches the settings unchanged;
- settings that loaded give a connector and an engine (built, not connected)
  or a ``db_core.errors`` exception, again without the password.

The focused tests below the properties pin each bug the fuzzer found.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import quote, urlencode

import pytest
import trustme
from hypothesis import example, given, note
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import AliasChoices
from sqlalchemy import text

from db_core import ConfigurationError, DatabaseSettings, DBError
from db_core.registry import get_connector
from dbtests.leaks import FaultReport
from dbtests.secrets import assert_error_has_no_secret, assert_no_secret

# In every password drawn; nothing else drawn can contain it.
MARKER = "Hyp0Pw"
FIELDS = tuple(DatabaseSettings.model_fields)
SOURCES = ("env", "dotenv", "kwargs")
EXAMPLES = 250

# --- values --------------------------------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=24)
# Bytes that are not UTF-8 reach os.environ as lone surrogates (surrogateescape).
UNDECODABLE = st.sampled_from(["caf\udce9", "\udcff", "a\udc80b"])
# Only arguments and .env files can carry a NUL; the environment cannot.
NUL = st.sampled_from(["a\x00b", "\x00"])
HOSTILE_TEXT = st.one_of(
    TEXT,
    st.just(""),
    UNDECODABLE,
    NUL,
    st.sampled_from([" ", "\t\n", "\u200b", "\ufeff", "x" * 5000, "'", '"', "\\", "${HOME}", "#", "=", "é"]),
)
NUMBER_TEXT = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.integers(-(10**40), 10**40).map(str),
    st.floats().map(repr),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400", "1e-400", "1e-7", "0", "-0"]),
    st.sampled_from(["0.0", "1_000", "0x10", " 5 ", "5.", ".5", "\u0663", "1e3", "", "9" * 5000, "true"]),
    st.sampled_from(["2147483", "2147484", "1e12"]),
    TEXT,
)
TYPED_NUMBER = st.one_of(
    st.integers(), st.integers(min_value=10**300), st.floats(), st.booleans(), st.none(), st.just(10**400)
)
BOOL_TEXT = st.one_of(
    st.sampled_from(["true", "false", "1", "0", "yes", "no", "on", "off", "TRUE", " true ", "maybe", "2", "-1", ""]),
    TEXT,
)
TYPE_NAMES = ["postgres", "postgresql", "pg", "mysql", "mariadb", "sqlite", "sqlite3"]
TYPE_TEXT = st.one_of(
    st.sampled_from(TYPE_NAMES),
    st.sampled_from(TYPE_NAMES).map(lambda name: f"  {name.upper()}\t"),
    HOSTILE_TEXT,
)
SSL_MODE_TEXT = st.one_of(
    st.sampled_from(["disable", "prefer", "require", "verify-ca", "verify-full"]),
    st.sampled_from(["REQUIRE", " require", "allow", "verify_full", "", "true"]),
    HOSTILE_TEXT,
)
HOST_TEXT = st.one_of(
    st.sampled_from(["localhost", "127.0.0.1", "::1", "[::1]", "h\u00e9.example", "xn--nxasmq6b", "a" * 300, "h:5432"]),
    HOSTILE_TEXT,
)
NAME_TEXT = st.one_of(
    st.sampled_from([":memory:", "app.db", "~/db_core_hostile.db", "~db_core_no_such_user/x.db", "/no/such/dir/x.db"]),
    st.sampled_from(["file:x?mode=ro", "a/../b", ".", "/", "x" * 300]),
    HOSTILE_TEXT,
)


@dataclass(frozen=True)
class FileRef:
    """A TLS file of a kind, made by the ``tls_files`` fixture."""

    kind: str


FILE_VALUE = st.one_of(
    st.sampled_from(["missing", "directory", "not_pem", "empty", "ca", "cert", "key", "relative_missing"]).map(FileRef),
    HOSTILE_TEXT,
)

# Spellings that mean something in a URL, or to a .env parser.
FRAGMENTS = ["@", ":", "/", "?", "#", "%", "%zz", "%4", "%41", "%C3%A9", "[", "]", "&", "=", " ", "\\", "'", '"', "$"]
FRAGMENTS += ["sslmode=", "port=", "connect_timeout=", "application_name=", "://", "\u00e9", "\u0661"]
NOISE = st.lists(st.one_of(st.sampled_from(FRAGMENTS), TEXT), max_size=4).map("".join)
PASSWORD = st.builds(lambda before, after: before + MARKER + after, NOISE, NOISE)

# Keys the drivers read from the URL's query and convert themselves.
DRIVER_KEYS = ["port", "host", "prepared_statement_cache_size", "client_flag", "compress", "connect_timeout"]
DRIVER_KEYS += ["read_timeout", "local_infile", "charset", "ssl_ca", "timeout", "command_timeout", "uri", "mode"]
JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT)
OPTION_DICT = st.dictionaries(st.one_of(st.sampled_from(DRIVER_KEYS), TEXT), st.one_of(TEXT, JSON_SCALAR), max_size=3)
ANY_JSON = st.recursive(
    JSON_SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=8
)
OPTIONS_TEXT = st.one_of(
    OPTION_DICT.map(json.dumps),
    ANY_JSON.map(json.dumps),
    st.sampled_from(["{", "[]", "null", "1", '"x"', "{}", "{'a': 'b'}", '{"a": 1e999}', '{"a": ' + "9" * 5000 + "}"]),
    st.integers(2, 100_000).map(lambda depth: "[" * depth + "]" * depth),
    HOSTILE_TEXT,
)
TYPED_OPTIONS = st.one_of(OPTION_DICT, ANY_JSON)


@dataclass(frozen=True)
class URLValue:
    """A drawn URL; ``password`` is the one it was built with, ``well_formed`` if it was encoded."""

    text: str
    password: str | None
    well_formed: bool


SCHEMES = ["postgresql", "postgres", "postgresql+asyncpg", "pg", "mysql", "mariadb", "mysql+aiomysql"]
SCHEMES += ["sqlite", "sqlite+aiosqlite", "oracle", "x"]
URL_HOSTS = ["localhost", "127.0.0.1", "[::1]", "[fe80::1%25eth0]", "db.example", "h\u00e9.example", "", "a" * 300]
URL_PORTS = st.one_of(
    st.none(), st.integers(-10, 70_000).map(str), st.sampled_from(["99999", "-1", "abc", "0", "", "\u0663", "1e3"])
)
QUERY = st.dictionaries(
    st.one_of(st.sampled_from(["sslmode", "connect_timeout", "application_name", "sslrootcert", *DRIVER_KEYS]), TEXT),
    st.one_of(TEXT, st.sampled_from(["require", "verify-full", "bogus", "5", "-1", "inf", ""])),
    max_size=3,
)


@st.composite
def url_values(draw: st.DrawFn) -> URLValue:
    scheme = draw(st.sampled_from(SCHEMES))
    user = draw(st.one_of(st.none(), TEXT))
    password = draw(st.one_of(st.none(), PASSWORD))
    host = draw(st.one_of(st.sampled_from(URL_HOSTS), TEXT.map(lambda t: quote(t, safe=""))))
    port = draw(URL_PORTS)
    name = draw(st.one_of(st.none(), TEXT))
    query = draw(QUERY)
    how = draw(st.sampled_from(["quote(safe='')", "quote()", "unencoded", "fragments"]))
    if how == "fragments":
        # Scheme-less, half URLs, stray brackets and escapes, and the password, unencoded, as
        # ":password@" somewhere in the mess (elsewhere it would be the host, say, on purpose).
        pieces = draw(st.lists(st.one_of(st.sampled_from([*FRAGMENTS, f"{scheme}://", "u:p@"]), TEXT), max_size=8))
        if password is not None:
            pieces.insert(draw(st.integers(0, len(pieces))), f":{password}@")
        return URLValue("".join(pieces), password, well_formed=False)
    encode = {"quote(safe='')": lambda t: quote(t, safe=""), "quote()": quote, "unencoded": lambda t: t}[how]
    userinfo = ""
    if user is not None or password is not None:
        userinfo = encode(user or "") + (f":{encode(password)}" if password is not None else "") + "@"
    netloc = host + (f":{port}" if port is not None else "")
    path = f"/{quote(name, safe='')}" if name is not None else ""
    rendered = f"{scheme}://{userinfo}{netloc}{path}" + (f"?{urlencode(query)}" if query else "")
    # quote() keeps "/", which in the user name ends the user name early.
    well_formed = how == "quote(safe='')" or (how == "quote()" and "/" not in (user or ""))
    return URLValue(rendered, password, well_formed)


def value_strategy(name: str, source: str) -> st.SearchStrategy[Any]:
    """The values drawn for field ``name`` given through ``source``."""
    annotation = str(DatabaseSettings.model_fields[name].annotation)
    typed = source == "kwargs"
    if name == "password":
        return PASSWORD
    if name == "url":
        return url_values()
    if name == "type":
        return TYPE_TEXT
    if name == "host":
        return HOST_TEXT
    if name == "name":
        return NAME_TEXT
    if name == "ssl_mode":
        return SSL_MODE_TEXT
    if name == "options":
        return st.one_of(OPTIONS_TEXT, TYPED_OPTIONS) if typed else OPTIONS_TEXT
    if name.startswith("ssl_") and name.endswith("_file"):
        return FILE_VALUE
    if "bool" in annotation:
        return st.one_of(BOOL_TEXT, st.booleans(), st.none()) if typed else BOOL_TEXT
    if "int" in annotation or "float" in annotation:
        return st.one_of(NUMBER_TEXT, TYPED_NUMBER) if typed else NUMBER_TEXT
    return HOSTILE_TEXT  # user, application_name and any text field to come


def spellings(name: str) -> list[str]:
    """The variable names a field is read from (any case)."""
    alias = DatabaseSettings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [f"DB_{name.upper()}"]


def variable(name: str) -> str:
    """How an error names the variable of field ``name``."""
    return "DB_URL (or DATABASE_URL)" if name == "url" else f"DB_{name.upper()}"


# --- a drawn case --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    source: str
    field: str
    key: str
    value: Any


@dataclass
class Case:
    entries: list[Entry]
    passwords: list[str] = field(default_factory=list)


@st.composite
def cases(draw: st.DrawFn, max_entries: int = 6) -> Case:
    pairs = draw(
        st.lists(st.tuples(st.sampled_from(FIELDS), st.sampled_from(SOURCES)), unique=True, max_size=max_entries)
    )
    # The password and a URL in most examples: they are what must never leak.
    for wanted in ("password", "url"):
        if draw(st.integers(0, 3)) and not any(f == wanted for f, _ in pairs):
            pairs.append((wanted, draw(st.sampled_from(SOURCES))))
    entries = []
    for name, source in pairs:
        value = draw(value_strategy(name, source))
        if source == "kwargs":
            key = draw(st.sampled_from([name, *spellings(name)])) if name == "url" else name
        else:
            key = draw(st.sampled_from(spellings(name)))
            key = draw(st.sampled_from([key, key.lower(), key.title()]))
        entries.append(Entry(source, name, key, value))
    return case_of(*entries)


def case_of(*entries: Entry) -> Case:
    case = Case(list(entries))
    for entry in entries:
        if entry.field == "password":
            case.passwords.append(entry.value)
        elif isinstance(entry.value, URLValue) and entry.value.password is not None:
            case.passwords.append(entry.value.password)
    return case


# Inputs that once broke a property: tried first, every run.
MISPARSED_PASSWORD = f"p@ss?sslmode={MARKER}"
LOAD_EXAMPLES = [
    case_of(Entry("dotenv", "type", "DB_TYPE", "caf\udce9")),  # a .env that is not UTF-8
    case_of(Entry("env", "options", "DB_OPTIONS", "[" * 5000 + "]" * 5000)),
    case_of(Entry("kwargs", "user", "user", "caf\udce9")),
    case_of(
        Entry(
            "env",
            "url",
            "DB_URL",
            URLValue(f"postgresql://u:{MISPARSED_PASSWORD}@h/db", MISPARSED_PASSWORD, well_formed=False),
        )
    ),
    # The rest of the password became the host: "Hyp0Pw@localhost".
    case_of(Entry("env", "url", "DB_URL", URLValue(f"postgresql://:@{MARKER}@localhost", f"@{MARKER}", False))),
]
ENGINE_EXAMPLES = [
    case_of(
        Entry("env", "type", "DB_TYPE", "pg"),
        Entry("env", "statement_timeout_seconds", "DB_STATEMENT_TIMEOUT_SECONDS", "inf"),
    ),
    case_of(Entry("env", "type", "DB_TYPE", "mysql"), Entry("env", "password", "DB_PASSWORD", f"caf\udce9{MARKER}")),
    case_of(Entry("kwargs", "url", "url", URLValue("postgresql://localhost?port=%3A", None, well_formed=True))),
    case_of(Entry("env", "type", "DB_TYPE", "sqlite"), Entry("env", "name", "DB_NAME", "~db_core_no_such_user/x.db")),
]


@dataclass
class Fed:
    """A case as handed to ``DatabaseSettings``."""

    env: dict[str, str]
    dotenv: bytes
    kwargs: dict[str, Any]
    entries: list[Entry]  # with the source each value really went through


def _dotenv_line(key: str, value: str) -> bytes:
    # Single quotes: python-dotenv undoes \\ and \' only (and expands ${...}).
    quoted = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"{key}='{quoted}'\n".encode("utf-8", "surrogateescape")


def _dotenv_exact(value: str) -> bool:
    """Whether a .env file gives ``value`` back unchanged (not: "${" expands, "\\r" becomes "\\n")."""
    return "${" not in value and "\r" not in value


def feed(case: Case, files: dict[str, Path]) -> Fed:
    fed = Fed({}, b"", {}, [])
    routed = []
    for entry in case.entries:
        value = entry.value
        if isinstance(value, FileRef):
            value = str(files[value.kind])
        if isinstance(value, URLValue):
            value = value.text
        source = entry.source
        if source == "env" and isinstance(value, str) and "\x00" in value:
            source = "kwargs"  # an environment variable cannot hold a NUL
        if source == "dotenv" and entry.field == "password" and not _dotenv_exact(value):
            source = "env" if "\x00" not in value else "kwargs"
        routed.append((entry, source, value))
    taken = {(entry.field, source) for entry, source, _value in routed if source == entry.source}
    for entry, source, value in routed:
        key = entry.key
        if source != entry.source:
            if (entry.field, source) in taken:
                continue  # that source already gives this field
            taken.add((entry.field, source))
            key = entry.field if source == "kwargs" else spellings(entry.field)[0]
        if source == "env":
            fed.env[key] = value
        elif source == "dotenv":
            fed.dotenv += _dotenv_line(key, value)
        else:
            fed.kwargs[key] = value
        fed.entries.append(Entry(source, entry.field, key, entry.value))
    return fed


@dataclass
class Outcome:
    settings: DatabaseSettings | None = None
    error: ConfigurationError | None = None


@dataclass
class Tally:
    examples: int = 0
    settled: int = 0  # valid settings, or a ConfigurationError
    loaded: int = 0
    engines: int = 0  # an engine, or a db_core error


def clean_environment(env: dict[str, str]) -> dict[str, str]:
    """``os.environ`` without any DB_* variable or DATABASE_URL, plus ``env``."""
    kept = {k: v for k, v in os.environ.items() if not k.upper().startswith("DB_") and k.upper() != "DATABASE_URL"}
    return {**kept, **env}


def load(fed: Fed, env_file: Path) -> Outcome:
    """``DatabaseSettings`` from the fed sources; fails the test on any exception but ``ConfigurationError``."""
    env_file.write_bytes(fed.dotenv)
    with mock.patch.dict(os.environ, clean_environment(fed.env), clear=True):
        try:
            return Outcome(settings=DatabaseSettings(_env_file=env_file, **fed.kwargs))
        except ConfigurationError as exc:
            return Outcome(error=exc)
        except Exception as exc:
            raise AssertionError(f"DatabaseSettings raised {type(exc).__name__}, not ConfigurationError") from exc


LINE = re.compile(r"^  (DB_URL \(or DATABASE_URL\)|DB_[A-Z_]+)(?:=| could not be read)")


def check_error(error: ConfigurationError, fed: Fed, env_file: Path) -> None:
    """The error names only variables that were set, or the .env file that could not be read."""
    message = str(error)
    given = {variable(entry.field) for entry in fed.entries}
    lines = message.splitlines()
    if str(env_file) in message:
        assert fed.dotenv, message
    else:
        assert lines[0] == "invalid database settings:", message
        named = [LINE.match(line) for line in lines[1:] if line.startswith("  ") and not line.startswith("   ")]
        assert named, f"the error names no variable: {message}"
        for match in named:
            assert match is not None, f"a line of the error names no variable: {message}"
            assert match.group(1) in given, f"{match.group(1)} was not set (set: {sorted(given)}): {message}"


def expected_password(fed: Fed) -> str | None:
    """The password the settings must hold, when the sources say it unambiguously; ``None`` when unknown."""
    for source in ("kwargs", "env", "dotenv"):
        entries = {entry.field: entry for entry in fed.entries if entry.source == source}
        url = entries.get("url")
        if url is not None:
            if not url.value.well_formed:
                return None  # whatever the parser made of it
            if url.value.password is not None:
                return str(url.value.password)
        if "password" in entries:
            return str(entries["password"].value)
    return ""


def check_settings(settings: DatabaseSettings, case: Case, fed: Fed) -> None:
    texts = {
        "repr(settings)": repr(settings),
        "str(settings)": str(settings),
        "settings.model_dump_json()": settings.model_dump_json(),
        "repr(settings.model_dump())": repr(settings.model_dump()),
        "repr(settings.model_dump(mode='json'))": repr(settings.model_dump(mode="json")),
    }
    for password in case.passwords:
        for label, text_ in texts.items():
            assert_no_secret(text_, label, password, MARKER)
    expected = expected_password(fed)
    if expected is not None:
        assert settings.password.get_secret_value() == expected, "the password given did not arrive unchanged"


def build_engine(settings: DatabaseSettings, case: Case) -> None:
    """Connector and engine for ``settings``, without connecting; only ``db_core.errors`` may come out."""
    try:
        connector = get_connector(settings)
        try:
            engine = connector.create_engine()
            texts = {"repr(engine)": repr(engine), "str(engine.url)": str(engine.url)}
            texts["repr(connector)"] = repr(connector)
            engine.sync_engine.dispose()
        finally:
            connector.close()
    except DBError as exc:
        for password in case.passwords:
            assert_error_has_no_secret(exc, "db_core error building the engine", password, MARKER)
        return
    except Exception as exc:
        raise AssertionError(
            f"building the engine raised {type(exc).__module__}.{type(exc).__qualname__}, not a db_core.errors one"
        ) from exc
    for password in case.passwords:
        for label, text_ in texts.items():
            assert_no_secret(text_, label, password, MARKER)


def examples(cases: list[Case]) -> Any:
    """``@example(case=...)`` for each of ``cases``."""

    def apply(test: Any) -> Any:
        for case in reversed(cases):
            test = example(case=case)(test)
        return test

    return apply


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One file of each kind FILE_VALUE names."""
    root = tmp_path_factory.mktemp("hostile_tls")
    ca = trustme.CA()
    client = ca.issue_cert("client.example")
    files = {
        "missing": root / "missing.pem",
        "directory": root,
        "not_pem": root / "not.pem",
        "empty": root / "empty.pem",
        "ca": root / "ca.pem",
        "cert": root / "cert.pem",
        "key": root / "key.pem",
        "relative_missing": Path("db_core_hostile_missing.pem"),
    }
    files["not_pem"].write_text("this is no certificate\n")
    files["empty"].write_bytes(b"")
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    return files


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile_env") / ".env"


# --- the properties ------------------------------------------------------------------------------


def test_every_field_has_a_strategy() -> None:
    """A field added to DatabaseSettings is fuzzed too: each one maps to a strategy and its variable names."""
    for name in FIELDS:
        for source in SOURCES:
            assert value_strategy(name, source) is not None
        assert spellings(name)


def test_hostile_settings_load_or_name_the_variable(
    tls_files: dict[str, Path], env_file: Path, fault_report: FaultReport
) -> None:
    tally = Tally()

    @hypothesis_settings(max_examples=EXAMPLES, deadline=None, database=None, report_multiple_bugs=False)
    @given(case=cases())
    @examples(LOAD_EXAMPLES)
    def load_or_refuse(case: Case) -> None:
        tally.examples += 1
        fed = feed(case, tls_files)
        note(f"env={fed.env!r}\n.env={fed.dotenv!r}\nkwargs={fed.kwargs!r}")
        outcome = load(fed, env_file)
        if outcome.error is not None:
            for password in case.passwords:
                assert_error_has_no_secret(outcome.error, "ConfigurationError", password, MARKER)
            check_error(outcome.error, fed, env_file)
        else:
            assert outcome.settings is not None
            check_settings(outcome.settings, case, fed)
        tally.settled += 1

    try:
        load_or_refuse()
    finally:
        fault_report.add("hostile settings input", "-", injected=tally.examples, recovered=tally.settled)


def test_settings_that_load_build_an_engine(
    tls_files: dict[str, Path], env_file: Path, fault_report: FaultReport
) -> None:
    tally = Tally()

    @hypothesis_settings(max_examples=EXAMPLES, deadline=None, database=None, report_multiple_bugs=False)
    @given(case=cases(max_entries=4))
    @examples(ENGINE_EXAMPLES)
    def build(case: Case) -> None:
        fed = feed(case, tls_files)
        note(f"env={fed.env!r}\n.env={fed.dotenv!r}\nkwargs={fed.kwargs!r}")
        outcome = load(fed, env_file)
        if outcome.settings is None:
            return
        tally.loaded += 1
        build_engine(outcome.settings, case)
        tally.engines += 1

    try:
        build()
    finally:
        fault_report.add(
            "hostile settings that load: engine built", "-", injected=tally.loaded, recovered=tally.engines
        )


# --- what the fuzzer found, one test each ---------------------------------------------------------


def settings_error(env: dict[str, str] | None = None, dotenv: bytes | None = None, **kwargs: Any) -> str:
    """The ConfigurationError's text for these sources (the test fails if the settings load)."""
    fed = Fed(env or {}, dotenv or b"", kwargs, [])
    with mock.patch.dict(os.environ, clean_environment(fed.env), clear=True):
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"db_core_hostile_{os.getpid()}.env"
        path.write_bytes(fed.dotenv)
        try:
            with pytest.raises(ConfigurationError) as info:
                DatabaseSettings(_env_file=path, **kwargs)
        finally:
            path.unlink()
    return str(info.value)


FLOAT_FIELDS = [name for name, info in DatabaseSettings.model_fields.items() if "float" in str(info.annotation)]


def test_numbers_that_are_not_finite_name_the_variable() -> None:
    # DB_STATEMENT_TIMEOUT_SECONDS=inf loaded, then the PostgreSQL connector's round() raised OverflowError.
    for name in FLOAT_FIELDS:
        for value in ("inf", "-inf", "nan", "1e400"):
            message = settings_error({f"DB_{name.upper()}": value, "DB_TYPE": "postgres"})
            assert f"DB_{name.upper()}=" in message, message
            assert "finite" in message or "greater than" in message, message


def test_statement_timeouts_the_servers_cannot_hold_name_the_variable() -> None:
    for value in ("0.0005", "2147484", "1e12"):
        message = settings_error({"DB_STATEMENT_TIMEOUT_SECONDS": value})
        assert "DB_STATEMENT_TIMEOUT_SECONDS=" in message, message


async def test_the_statement_timeout_bounds_are_what_the_servers_take(postgres_server: Any, mysql_server: Any) -> None:
    """The smallest is a limit on MariaDB (less than 1 ms was 0: none); PostgreSQL accepts the largest."""
    for settings, query, check in (
        (mysql_server.settings(statement_timeout_seconds=0.001), "SELECT @@max_statement_time", lambda v: v > 0),
        (
            postgres_server.settings(statement_timeout_seconds=2_147_483),
            "SHOW statement_timeout",
            lambda v: v != "0",
        ),
    ):
        connector = get_connector(settings)
        engine = connector.create_engine()
        try:
            async with engine.connect() as connection:
                value = (await connection.execute(text(query))).scalar_one()
        finally:
            await engine.dispose()
        assert check(value), f"{settings.type}: {query} gave {value!r}"


def test_a_sqlite_busy_timeout_sqlite_cannot_hold_names_the_variable(tmp_path: Path) -> None:
    """sqlite3 takes whole milliseconds in a C int: more than 2147483 s became 0, "do not wait for the lock"."""
    message = settings_error({"DB_SQLITE_BUSY_TIMEOUT_SECONDS": "2147484"})
    assert "DB_SQLITE_BUSY_TIMEOUT_SECONDS=" in message, message
    path = tmp_path / "busy.db"
    settings = DatabaseSettings(type="sqlite", name=str(path), sqlite_busy_timeout_seconds=2_147_483, _env_file=None)
    connector = get_connector(settings)
    # As the connector connects, without an event loop: the same sqlite3 call, the same timeout argument.
    timeout = connector.get_connect_args()["timeout"]
    with sqlite3.connect(path, timeout=timeout) as connection:
        assert connection.execute("PRAGMA busy_timeout").fetchone() == (2_147_483_000,)
    connection.close()


@pytest.mark.parametrize("source", ["env", "dotenv"])
def test_options_json_nested_too_deeply_names_db_options(source: str) -> None:
    # json.loads raised RecursionError, which the settings sources do not catch.
    deep = "[" * 100_000 + "]" * 100_000
    if source == "env":
        message = settings_error({"DB_OPTIONS": deep})
    else:
        message = settings_error(dotenv=f"DB_OPTIONS='{deep}'\n".encode())
    assert "DB_OPTIONS could not be read: its JSON is nested too deeply" in message, message


def test_an_env_file_that_is_not_utf8_is_named_without_its_bytes() -> None:
    # A .env saved as latin-1: UnicodeDecodeError came out of DatabaseSettings().
    password = f"caf\u00e9-{MARKER}"
    message = settings_error(dotenv=f"DB_TYPE=postgres\nDB_PASSWORD={password}\n".encode("latin-1"))
    assert "the env file" in message, message
    assert "is not utf-8 text" in message, message
    assert_no_secret(message, "the env-file error", password, MARKER)


def test_undecodable_bytes_in_a_variable_name_it() -> None:
    # DB_USER=caf<0xE9> in a UTF-8 environment: the settings loaded, then model_dump_json() failed and
    # the MySQL connector raised UnicodeEncodeError building the engine (for the password).
    for name in ("user", "password", "host", "name", "application_name", "type", "url"):
        value = "mysql://u:caf\udce9@h/db" if name == "url" else "caf\udce9"
        message = settings_error({"DB_TYPE": "mysql", spellings(name)[0]: value})
        assert f"{variable(name)}=" in message, message
        assert "not UTF-8 text" in message, message
        if name in ("password", "url"):
            assert "caf" not in message, message


def test_a_nul_in_a_value_names_the_variable() -> None:
    for name in ("host", "name", "password", "ssl_ca_file", "options"):
        value: Any = {"a": "b\x00"} if name == "options" else "a\x00b"
        message = settings_error(**{name: value})
        assert f"DB_{name.upper()}=" in message, message
        assert "NUL" in message, message


def test_a_url_part_a_higher_source_overrides_is_not_blamed_on_the_url() -> None:
    # The argument port="abc" beats DB_URL's port, yet the error said "DB_URL ... its port 'abc'".
    message = settings_error({"DB_URL": "postgresql://u@h:5432/db"}, port="abc")
    assert "DB_PORT='abc' is invalid" in message, message
    assert "DB_URL" not in message, message
    # And the other way round: the URL of the arguments beats DB_PORT, so a bad port there is the URL's.
    message = settings_error({"DB_PORT": "5432"}, url="postgresql://u@h:99999/db")
    assert "DB_URL (or DATABASE_URL)=*** is invalid: its port 99999" in message, message


def test_a_url_split_in_the_wrong_place_is_refused_without_its_parts() -> None:
    # An unencoded "@" in the password: the parser ends the password there and reads the rest of
    # it as host, path and query. The settings then loaded with the host "<rest>@db.example"
    # (shown by repr(settings), by db check and in every connect error), or the error echoed
    # "its ssl_mode '<rest of the password>'".
    for password in (f"p@{MARKER}", f"p@ss?sslmode={MARKER}", f"{MARKER}@x:5/"):
        message = settings_error({"DB_URL": f"postgresql://u:{password}@db.example:5432/app"})
        assert "DB_URL (or DATABASE_URL)=*** is invalid: an @ in it does not end the user name" in message, message
        assert "percent-encode @ as %40" in message, message
        assert_no_secret(message, "the error of a misparsed DB_URL", password, MARKER)
    # A "/" in the user name: no user name is found at all, and the password lands in the database name.
    message = settings_error({"DB_URL": f"postgresql://us/er:{MARKER}@db.example/app"})
    assert "an @ in it does not end the user name" in message, message
    assert_no_secret(message, "the error of a misparsed DB_URL", MARKER, MARKER)


def test_an_at_sign_in_the_user_name_still_parses() -> None:
    """Azure's user@server user names, often left unencoded, are read as the user name they are."""
    settings = DatabaseSettings(url=f"postgresql://app@server:{MARKER}@server.example:5432/app", _env_file=None)
    assert (settings.user, settings.host) == ("app@server", "server.example")
    assert settings.password.get_secret_value() == MARKER


# --- found by the fuzzer, outside settings.py: these fail until the connectors are fixed ------------


def test_driver_options_the_dialect_cannot_convert_are_a_configuration_error() -> None:
    """DB_OPTIONS (or DB_URL's query) the dialect converts itself: ValueError/ArgumentError out of get_engine()."""
    raised = []
    for backend, options in (
        ("postgres", {"port": "abc"}),
        ("postgres", {"prepared_statement_cache_size": "many"}),
        ("mysql", {"client_flag": "x"}),
        ("mysql", {"compress": "verify-full"}),
        ("mysql", {"read_timeout": "soon"}),
    ):
        connector = get_connector(DatabaseSettings(type=backend, options=options, _env_file=None))
        try:
            connector.create_engine().sync_engine.dispose()
        except ConfigurationError as exc:
            if "DB_OPTIONS" not in str(exc):
                raised.append(f"{backend} DB_OPTIONS={json.dumps(options)}: names no DB_OPTIONS: {exc}")
        except Exception as exc:
            raised.append(f"{backend} DB_OPTIONS={json.dumps(options)}: {type(exc).__name__}: {exc}")
        else:
            raised.append(f"{backend} DB_OPTIONS={json.dumps(options)}: accepted")
    assert not raised, "not a ConfigurationError naming DB_OPTIONS:\n  " + "\n  ".join(raised)


def test_a_sqlite_name_under_an_unknown_home_is_a_configuration_error() -> None:
    """DB_NAME=~nosuchuser/app.db: Path.expanduser() raised RuntimeError out of get_engine()."""
    settings = DatabaseSettings(type="sqlite", name="~db_core_no_such_user/app.db", _env_file=None)
    connector = get_connector(settings)
    try:
        with pytest.raises(ConfigurationError, match="DB_NAME"):
            connector.create_engine().sync_engine.dispose()
    finally:
        connector.close()
