"""PostgresConnector: URL and asyncpg arguments from the settings."""

from __future__ import annotations

import ssl

import pytest

from db_core import DatabaseSettings, get_connector
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
