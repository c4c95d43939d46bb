"""PostgresConnector: URL and asyncpg arguments from the settings."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import pytest
from sqlalchemy.exc import DBAPIError

from db_core import DatabaseSettings, get_connector
from db_core.testing.suite import chain
from db_postgres import PostgresConnector


def connector(**values: object) -> PostgresConnector:
    c = get_connector(DatabaseSettings(type="postgres", _env_file=None, **values))
    assert isinstance(c, PostgresConnector)
    return c


def test_url_and_defaults() -> None:
    c = connector(host="db", user="u", password="p@ss/word", name="shop")
    url = c.url
    assert (url.drivername, url.host, url.port, url.database, url.username) == (
        "postgresql+asyncpg",
        "db",
        5432,
        "shop",
        "u",
    )
    assert url.password == "p@ss/word"
    assert "p@ss" not in repr(c)


def test_connect_args() -> None:
    args = connector(connect_timeout_seconds=2.5, application_name="billing").get_connect_args()
    assert args["timeout"] == 2.5
    assert args["server_settings"] == {"application_name": "billing"}
    assert "ssl" not in args  # the driver's default


@pytest.mark.parametrize(
    ("mode", "verify", "check_hostname"),
    [
        ("require", ssl.CERT_NONE, False),
        ("verify-ca", ssl.CERT_REQUIRED, False),
        ("verify-full", ssl.CERT_REQUIRED, True),
    ],
)
def test_ssl_modes_build_a_context(mode: str, verify: ssl.VerifyMode, check_hostname: bool) -> None:
    context = connector(ssl_mode=mode).get_connect_args()["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert (context.verify_mode, context.check_hostname) == (verify, check_hostname)


def test_ssl_disable_and_prefer() -> None:
    assert connector(ssl_mode="disable").get_connect_args()["ssl"] is False
    assert connector(ssl_mode="prefer").get_connect_args()["ssl"] == "prefer"


async def test_a_port_that_answers_in_plain_text_after_accepting_tls_is_named() -> None:
    """A proxy or another service on DB_PORT that says "yes, TLS" and then speaks plain text.

    OpenSSL only says WRONG_VERSION_NUMBER; the error names the cause and the settings to check.
    """

    handlers: list[asyncio.Task[None]] = []

    async def plain_text(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        try:
            await reader.readexactly(8)  # PostgreSQL's SSLRequest
            writer.write(b"S")
            await writer.drain()
            await reader.read(4096)  # the TLS ClientHello, answered in plain text
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            await reader.read()  # until the client gives up
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(plain_text, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = DatabaseSettings(
        type="postgres", host="127.0.0.1", port=port, ssl_mode="require", connect_timeout_seconds=5, _env_file=None
    )
    engine = get_connector(settings).create_engine()
    try:
        with pytest.raises((DBAPIError, OSError)) as info:  # SQLAlchemy 2.1 wraps it; 2.0 does not
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
        server.close()
        await server.wait_closed()
        await asyncio.wait_for(asyncio.gather(*handlers), timeout=5)
    shown = " ".join(str(e) for e in chain(info.value))
    assert f"the PostgreSQL server at 127.0.0.1:{port}" in shown
    assert "did not answer in TLS" in shown
    assert "DB_SSL_MODE=require" in shown
