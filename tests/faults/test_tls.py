"""TLS: a PostgreSQL and a MariaDB of the test's own, serving certificates the test made.

Issue 3: ``DB_SSL_MODE`` (``disable``, ``prefer``, ``require``, ``verify-ca``,
``verify-full``) and the ``DB_SSL_*`` files are translated correctly for
asyncpg and aiomysql: the right CA connects and the server itself confirms
the session is encrypted; a wrong CA or a host name the certificate does not
cover is refused, with an error whose own message names the certificate
problem and the setting to check; ``require`` never silently goes on in plain
text; a ``DB_SSL_*`` file that does not exist or holds no certificate makes
``get_engine()`` raise a ``db_core.errors.ConfigurationError``; and none of
these errors shows the password.

The server certificate is issued for ``localhost`` only, so ``127.0.0.1`` is a
wrong host name for the same server. Each server starts once per module.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import text

from db_core import (
    ConfigurationError,
    DatabaseSettings,
    UnitOfWork,
    configure,
    dispose_engine,
    get_connector_instance,
    get_engine,
)
from dbtests.leaks import FaultReport
from dbtests.secrets import LOGIN_ERRORS, PASSWORD, assert_error_has_no_secret, sql_string
from dbtests.servers import admin, postgres_cluster, run_coroutine
from dbtests.tls import (
    CLIENT_NAME,
    SERVER_NAME,
    Certificates,
    make_certificates,
    mariadb_server,
    postgres_tls,
    recording_proxy,
    strip_mysql_tls,
)

BACKENDS = ("postgres", "mysql")
WRONG_HOST = "127.0.0.1"  # the same server, by an address its certificate does not name
USER = "db_test_tls"  # logs in with the password, over TLS or not
DATABASE = "db_test_tls"
LOGIN = {"host": SERVER_NAME, "user": USER, "password": PASSWORD, "name": DATABASE}
# What a refused connection raises: a refused login (LOGIN_ERRORS: DBAPIError, or on SQLAlchemy 2.0
# asyncpg's own error), or the OSError the connectors raise for TLS (not wrapped on 2.0 nor 2.1).
CONNECT_ERRORS = (*LOGIN_ERRORS, OSError)
PG_HBA = f"""\
local   all  all                          trust
hostssl all  {CLIENT_NAME}  127.0.0.1/32  cert
host    all  {CLIENT_NAME}  127.0.0.1/32  reject
host    all  all            127.0.0.1/32  scram-sha-256
"""


@dataclass(frozen=True)
class Target:
    """A server to connect to: its backend, and settings for it with the given overrides."""

    backend: str
    settings: Callable[..., DatabaseSettings]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls") / "certs")


@pytest.fixture(scope="module")
def tls_postgres(certs: Certificates) -> Iterator[Target]:
    hba = certs.directory / "pg_hba.conf"
    hba.write_text(PG_HBA)
    options = postgres_tls(certs)
    with postgres_cluster(conf=options["conf"], files={**options["files"], "pg_hba.conf": hba}) as cluster:
        run_coroutine(
            cluster.admin(
                f"CREATE ROLE {USER} LOGIN PASSWORD {sql_string(PASSWORD)}",
                f"CREATE ROLE {CLIENT_NAME} LOGIN",
                f"CREATE DATABASE {DATABASE}",
            )
        )

        def settings(**overrides: Any) -> DatabaseSettings:
            return cluster.settings(**{**LOGIN, **overrides})

        yield Target("postgres", settings)


@pytest.fixture(scope="module")
def tls_mysql(certs: Certificates) -> Iterator[Target]:
    with mariadb_server(certs) as server:
        run_coroutine(
            server.admin(
                "SET NAMES utf8mb4",  # the statement's text is UTF-8, as the mysql client sends it
                f"CREATE DATABASE {DATABASE}",
                f"CREATE USER '{USER}'@'%' IDENTIFIED BY {sql_string(PASSWORD)}",
                f"GRANT ALL PRIVILEGES ON {DATABASE}.* TO '{USER}'@'%'",
                f"CREATE USER '{CLIENT_NAME}'@'%' REQUIRE X509",
                f"GRANT ALL PRIVILEGES ON {DATABASE}.* TO '{CLIENT_NAME}'@'%'",
            )
        )

        def settings(**overrides: Any) -> DatabaseSettings:
            return server.settings(**{**LOGIN, **overrides})

        yield Target("mysql", settings)


@pytest.fixture(params=BACKENDS)
def tls_server(request: pytest.FixtureRequest) -> Target:
    """The backend's server with TLS."""
    return request.getfixturevalue(f"tls_{request.param}")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def plain_servers(request: pytest.FixtureRequest) -> Iterator[dict[str, Target]]:
    """A server without TLS per backend: the shared one if it has TLS off, else one of our own."""
    targets: dict[str, Target] = {}
    with ExitStack() as stack:
        for backend in BACKENDS:
            server = request.getfixturevalue(f"{backend}_server")
            if backend == "postgres":
                tls_on = run_coroutine(admin("postgres", ["SHOW ssl"]))[0][0] == "on"
            else:
                have_ssl = run_coroutine(admin("mysql", ["SHOW VARIABLES LIKE 'have_ssl'"]))
                tls_on = bool(have_ssl) and have_ssl[0][1] == "YES"
            if tls_on:
                own = stack.enter_context(postgres_cluster() if backend == "postgres" else mariadb_server(None))
                targets[backend] = Target(backend, own.settings)
            else:
                targets[backend] = Target(backend, server.settings)
        yield targets


async def session_tls(settings: DatabaseSettings) -> tuple[bool, str]:
    """Connect through db_core and ask the server whether this session is encrypted; and as whom it logged in."""
    configure(settings)
    try:
        async with UnitOfWork() as session:
            if get_connector_instance().name == "postgres":
                row = (
                    await session.execute(
                        text("SELECT ssl, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                    )
                ).one()
                return bool(row[0]), str(row[1])
            cipher = (await session.execute(text("SHOW SESSION STATUS LIKE 'Ssl_cipher'"))).one()[1]
            user = (await session.execute(text("SELECT CURRENT_USER()"))).scalar_one()
            return bool(cipher), str(user).split("@")[0]
    finally:
        await dispose_engine()
        configure(None)


async def connect_error(settings: DatabaseSettings) -> BaseException:
    """The error that connecting with ``settings`` raises (failing the test if it connects)."""
    configure(settings)
    try:
        with pytest.raises(CONNECT_ERRORS) as info:
            async with UnitOfWork() as session:
                await session.execute(text("SELECT 1"))
        return info.value
    finally:
        await dispose_engine()
        configure(None)


# --- the right CA connects, encrypted; disable and prefer -----------------------------------------


async def test_right_ca_connects_encrypted(tls_server: Target, certs: Certificates) -> None:
    cases = {
        "verify-full by the certificate's name": {"ssl_mode": "verify-full", "ssl_ca_file": certs.ca},
        # verify-ca checks who signed the certificate, not the name it is issued for.
        "verify-ca by another address": {"ssl_mode": "verify-ca", "ssl_ca_file": certs.ca, "host": WRONG_HOST},
        "require, no CA": {"ssl_mode": "require", "host": WRONG_HOST},
        "prefer on a server with TLS": {"ssl_mode": "prefer"},
    }
    for label, overrides in cases.items():
        encrypted, user = await session_tls(tls_server.settings(**overrides))
        assert encrypted, f"{label}: the server reports the session is not encrypted"
        assert user == USER, label


async def test_libpq_url_spelling_connects_encrypted(tls_server: Target, certs: Certificates) -> None:
    base = tls_server.settings()
    scheme = "postgresql" if tls_server.backend == "postgres" else "mysql"
    url = (
        f"{scheme}://{USER}:{quote(PASSWORD, safe='')}@{SERVER_NAME}:{base.port}/{DATABASE}"
        f"?sslmode=verify-full&sslrootcert={quote(str(certs.ca))}"
    )
    settings = DatabaseSettings(url=url, connect_timeout_seconds=5, _env_file=None)
    assert (settings.ssl_mode, settings.ssl_ca_file) == ("verify-full", certs.ca)
    assert await session_tls(settings) == (True, USER)


async def test_disable_is_plain_text_even_where_tls_is_offered(tls_server: Target) -> None:
    encrypted, user = await session_tls(tls_server.settings(ssl_mode="disable"))
    assert not encrypted
    assert user == USER


@pytest.mark.parametrize("backend", BACKENDS)
async def test_prefer_falls_back_to_plain_text_as_libpq_does(backend: str, plain_servers: dict[str, Target]) -> None:
    encrypted, _ = await session_tls(plain_servers[backend].settings(ssl_mode="prefer", connect_timeout_seconds=5))
    assert not encrypted


@pytest.mark.parametrize("names", ["DB_SSL_CA, DB_SSL_CERT, DB_SSL_KEY", "DB_SSL_*_FILE"])
async def test_client_certificate_is_presented(
    tls_server: Target, certs: Certificates, names: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server admits this user only with a certificate its CA signed (PostgreSQL "cert", MariaDB REQUIRE X509).
    suffix = "" if names.startswith("DB_SSL_CA,") else "_FILE"
    monkeypatch.setenv("DB_SSL_MODE", "verify-full")
    monkeypatch.setenv(f"DB_SSL_CA{suffix}", str(certs.ca))
    monkeypatch.setenv(f"DB_SSL_CERT{suffix}", str(certs.client_cert))
    monkeypatch.setenv(f"DB_SSL_KEY{suffix}", str(certs.client_key))
    with_cert = tls_server.settings(user=CLIENT_NAME, password="")
    assert (with_cert.ssl_cert_file, with_cert.ssl_key_file) == (certs.client_cert, certs.client_key)
    assert await session_tls(with_cert) == (True, CLIENT_NAME)
    monkeypatch.delenv(f"DB_SSL_CERT{suffix}")
    monkeypatch.delenv(f"DB_SSL_KEY{suffix}")
    without = tls_server.settings(user=CLIENT_NAME, password="")
    message = str(await connect_error(without)).lower()
    assert "certificate" in message or "access denied" in message, message


# --- refusals -------------------------------------------------------------------------------------


def refusals(tls_server: Target, plain: Target, certs: Certificates) -> dict[str, tuple[DatabaseSettings, list[str]]]:
    """Settings that must not connect, and what the error's own message must name."""
    return {
        "wrong CA, verify-full": (
            tls_server.settings(ssl_mode="verify-full", ssl_ca_file=certs.other_ca),
            ["certificate", "DB_SSL_CA", str(certs.other_ca), "DB_SSL_MODE=verify-full"],
        ),
        "wrong CA, verify-ca": (
            tls_server.settings(ssl_mode="verify-ca", ssl_ca_file=certs.other_ca, host=WRONG_HOST),
            ["certificate", "DB_SSL_CA", "DB_SSL_MODE=verify-ca"],
        ),
        "no CA (the system's CAs), verify-full": (
            tls_server.settings(ssl_mode="verify-full"),
            ["certificate", "DB_SSL_CA", "DB_SSL_MODE=verify-full"],
        ),
        "wrong host name, verify-full": (
            tls_server.settings(ssl_mode="verify-full", ssl_ca_file=certs.ca, host=WRONG_HOST),
            ["certificate", WRONG_HOST, "DB_HOST", "DB_SSL_MODE=verify-full"],
        ),
        "plain-text server, require": (
            plain.settings(ssl_mode="require", password=PASSWORD, connect_timeout_seconds=5),
            ["does not offer TLS", "DB_SSL_MODE"],
        ),
        "plain-text server, verify-full": (
            plain.settings(ssl_mode="verify-full", ssl_ca_file=certs.ca, password=PASSWORD, connect_timeout_seconds=5),
            ["does not offer TLS", "DB_SSL_MODE"],
        ),
    }


async def test_wrong_ca_wrong_host_and_plain_text_are_refused(
    tls_server: Target, plain_servers: dict[str, Target], certs: Certificates, fault_report: FaultReport
) -> None:
    cases = refusals(tls_server, plain_servers[tls_server.backend], certs)
    wrong: list[str] = []
    for label, (settings, expected) in cases.items():
        exc = await connect_error(settings)
        # The error's own text, as a log line or an HTTP 500 page shows it: not only its chained cause.
        message = str(exc)
        missing = [part for part in expected if part.lower() not in message.lower()]
        if missing:
            wrong.append(f"{label}: {type(exc).__qualname__}: {message!r} does not name {missing}")
    fault_report.add(
        "TLS: wrong CA / wrong host / plain-text server under require",
        tls_server.backend,
        injected=len(cases),
        recovered=len(cases) - len(wrong),
    )
    assert not wrong, "\n".join(wrong)


# PostgreSQL's SSLRequest: all a client may send before the server agrees to TLS.
SSL_REQUEST = struct.pack("!ii", 8, 80877103)


async def test_require_sends_no_login_where_tls_is_missing_or_stripped(
    tls_server: Target, plain_servers: dict[str, Target], certs: Certificates, fault_report: FaultReport
) -> None:
    """Refusing after logging in is too late: the user name and password (hash) would have gone out in plain text.

    A relay between client and server records what the client sends: to a
    server without TLS, and, on MariaDB, to the TLS server with TLS stripped
    from its greeting and the password asked for in clear text, as a man in
    the middle would.
    """
    backend = tls_server.backend
    plain = plain_servers[backend].settings()
    assert plain.port is not None
    routes: dict[str, tuple[str, int, Callable[[bytes], bytes] | None]] = {
        "server without TLS": (plain.host, plain.port, None)
    }
    if backend == "mysql":
        tls_port = tls_server.settings().port
        assert tls_port is not None
        routes["TLS stripped from the greeting"] = ("127.0.0.1", tls_port, strip_mysql_tls)
    allowed = SSL_REQUEST if backend == "postgres" else b""
    injected = recovered = 0
    wrong: list[str] = []
    for route, (host, port, greeting) in routes.items():
        target = plain_servers[backend] if greeting is None else tls_server
        # The relay is real: without TLS required, the login goes through it, user name and all.
        async with recording_proxy(host, port, greeting) as relay:
            settings = target.settings(host=SERVER_NAME, port=relay.port, ssl_mode="disable", connect_timeout_seconds=5)
            await session_tls(settings)
            assert (settings.user or "").encode() in relay.sent, f"{route}: the relay saw no login"
        for mode in ("require", "verify-full"):
            injected += 1
            async with recording_proxy(host, port, greeting) as relay:
                settings = target.settings(
                    host=SERVER_NAME,
                    port=relay.port,
                    password=PASSWORD,
                    ssl_mode=mode,
                    ssl_ca_file=certs.ca,
                    connect_timeout_seconds=5,
                )
                exc = await connect_error(settings)
                sent = bytes(relay.sent)
            problems = []
            if "does not offer TLS" not in str(exc) or "DB_SSL_MODE" not in str(exc):
                problems.append(f"error {type(exc).__qualname__}: {str(exc)!r}")
            if sent != allowed:
                shown = sent.replace(PASSWORD.encode(), b"<THE PASSWORD IN CLEAR TEXT>")
                problems.append(f"the client sent {shown[:300]!r}")
            if problems:
                wrong.append(f"{route}, {mode}: " + "; ".join(problems))
            else:
                recovered += 1
    fault_report.add(
        "TLS: missing or stripped by a man in the middle, login withheld",
        backend,
        injected=injected,
        recovered=recovered,
    )
    assert not wrong, "\n".join(wrong)


def unusable_files(certs: Certificates) -> dict[str, tuple[dict[str, str], list[str]]]:
    """``DB_SSL_*`` variables naming files that cannot be used, and what the error must name."""
    missing = str(certs.directory / "no-such-file.pem")
    directory = str(certs.directory)
    ca, cert, key = str(certs.ca), str(certs.client_cert), str(certs.client_key)
    return {
        "CA file missing": ({"DB_SSL_CA_FILE": missing}, ["DB_SSL_CA_FILE", missing]),
        "CA file not a certificate": (
            {"DB_SSL_CA_FILE": str(certs.not_a_certificate)},
            ["DB_SSL_CA_FILE", str(certs.not_a_certificate), "certificate"],
        ),
        "CA file a directory": ({"DB_SSL_CA_FILE": directory}, ["DB_SSL_CA_FILE", directory]),
        "client certificate missing": (
            {"DB_SSL_CA_FILE": ca, "DB_SSL_CERT_FILE": missing, "DB_SSL_KEY_FILE": key},
            ["DB_SSL_CERT_FILE", missing],
        ),
        "client certificate not a certificate": (
            {"DB_SSL_CA_FILE": ca, "DB_SSL_CERT_FILE": str(certs.not_a_certificate), "DB_SSL_KEY_FILE": key},
            ["DB_SSL_CERT_FILE", str(certs.not_a_certificate)],
        ),
        "client key missing": (
            {"DB_SSL_CA_FILE": ca, "DB_SSL_CERT_FILE": cert, "DB_SSL_KEY_FILE": missing},
            ["DB_SSL_KEY_FILE", missing],
        ),
        "client key of another certificate": (
            {"DB_SSL_CA_FILE": ca, "DB_SSL_CERT_FILE": cert, "DB_SSL_KEY_FILE": str(certs.other_key)},
            ["DB_SSL_KEY_FILE", str(certs.other_key)],
        ),
        "client key encrypted": (
            {"DB_SSL_CA_FILE": ca, "DB_SSL_CERT_FILE": cert, "DB_SSL_KEY_FILE": str(certs.encrypted_key)},
            ["DB_SSL_KEY_FILE", str(certs.encrypted_key), "passphrase"],
        ),
        "client key without a certificate": (
            {"DB_SSL_CA_FILE": ca, "DB_SSL_KEY_FILE": key},
            ["DB_SSL_KEY_FILE", "DB_SSL_CERT_FILE"],
        ),
    }


@pytest.mark.parametrize("backend", BACKENDS)
async def test_unusable_tls_files_raise_configuration_error(
    backend: str, certs: Certificates, monkeypatch: pytest.MonkeyPatch, fault_report: FaultReport
) -> None:
    cases = [
        (mode, label, variables, expected)
        for mode in ("prefer", "require", "verify-ca", "verify-full")
        for label, (variables, expected) in unusable_files(certs).items()
    ]
    wrong: list[str] = []
    for mode, label, variables, expected in cases:
        with monkeypatch.context() as env:
            for key in [k for k in os.environ if k.upper().startswith("DB_SSL_")]:
                env.delenv(key)
            env.setenv("DB_TYPE", backend)
            env.setenv("DB_HOST", SERVER_NAME)
            env.setenv("DB_PASSWORD", PASSWORD)
            env.setenv("DB_SSL_MODE", mode)
            for key, value in variables.items():
                # Half of the modes with the issue's short names, DB_SSL_CA/CERT/KEY.
                env.setenv(key.removesuffix("_FILE") if mode in ("require", "verify-full") else key, value)
            configure(DatabaseSettings(_env_file=None))  # the settings load: the files are read at get_engine()
            try:
                with pytest.raises(ConfigurationError) as info:
                    get_engine()
            finally:
                await dispose_engine()
                configure(None)
        assert_error_has_no_secret(info.value, f"unusable TLS file: {label} [{backend}, {mode}]")
        missing = [part for part in expected if part.lower() not in str(info.value).lower()]
        if missing:
            wrong.append(f"{label}, {mode}: {str(info.value)!r} does not name {missing}")
    fault_report.add("TLS: unusable DB_SSL_* file", backend, injected=len(cases), recovered=len(cases) - len(wrong))
    assert not wrong, "\n".join(wrong)


# --- the password ---------------------------------------------------------------------------------


async def test_tls_failures_never_show_the_password(
    tls_server: Target, plain_servers: dict[str, Target], certs: Certificates
) -> None:
    # The password is real: it logs in over TLS.
    assert await session_tls(tls_server.settings(ssl_mode="verify-full", ssl_ca_file=certs.ca)) == (True, USER)
    plain = plain_servers[tls_server.backend]
    for label, (settings, _) in refusals(tls_server, plain, certs).items():
        assert settings.password.get_secret_value() == PASSWORD
        assert_error_has_no_secret(await connect_error(settings), f"{label} [{tls_server.backend}]")
    # The same, with everything in one URL.
    port = tls_server.settings().port
    scheme = "postgresql" if tls_server.backend == "postgres" else "mysql"
    url = (
        f"{scheme}://{USER}:{quote(PASSWORD, safe='')}@{WRONG_HOST}:{port}/{DATABASE}"
        f"?sslmode=verify-full&sslrootcert={quote(str(certs.ca))}"
    )
    exc = await connect_error(DatabaseSettings(url=url, connect_timeout_seconds=5, _env_file=None))
    assert "certificate" in str(exc)
    assert_error_has_no_secret(exc, f"wrong host name, settings from DB_URL [{tls_server.backend}]")
