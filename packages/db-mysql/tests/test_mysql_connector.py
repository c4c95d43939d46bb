"""MySQLConnector: URL and aiomysql arguments from the settings."""

from __future__ import annotations

import ssl

from db_core import DatabaseSettings, get_connector
from db_mysql import MySQLConnector


def connector(**values: object) -> MySQLConnector:
    c = get_connector(DatabaseSettings(type="mariadb", _env_file=None, **values))
    assert isinstance(c, MySQLConnector)
    return c


def test_url_defaults_to_3306() -> None:
    url = connector(host="db", name="shop").url
    assert (url.drivername, url.host, url.port, url.database) == ("mysql+aiomysql", "db", 3306, "shop")


def test_non_ascii_password_is_sent_as_utf8_bytes() -> None:
    # aiomysql encodes the password as latin-1; the URL carries the UTF-8 bytes as latin-1 characters.
    url = connector(password="pässwörd").url
    assert url.password is not None
    assert str(url.password).encode("latin-1") == "pässwörd".encode()


def test_connect_args() -> None:
    args = connector(connect_timeout_seconds=3, application_name="billing").get_connect_args()
    assert args["charset"] == "utf8mb4"
    assert args["local_infile"] is False
    assert args["connect_timeout"] == 3
    assert args["program_name"] == "billing"
    assert "ssl" not in args


def test_ssl_context() -> None:
    context = connector(ssl_mode="verify-full").get_connect_args()["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert "ssl" not in connector(ssl_mode="disable").get_connect_args()
