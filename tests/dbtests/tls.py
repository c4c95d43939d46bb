"""Certificates made by the test, and throwaway servers that serve TLS with them.

:func:`make_certificates` writes a CA, a server certificate for ``localhost``
only (so ``127.0.0.1`` is the "wrong host name" of the same server), a client
certificate, a second, unrelated CA, and some unusable files.
:func:`mariadb_server` starts a :class:`~dbtests.servers.MariaDBServer` with
those certificates or without TLS; the PostgreSQL counterpart is
:func:`dbtests.servers.postgres_cluster` with :func:`postgres_tls`.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db_core.testing.relay import Relay
from dbtests.servers import MariaDBServer, mariadb

SERVER_NAME = "localhost"
CLIENT_NAME = "db_test_client"


@dataclass(frozen=True)
class Certificates:
    """PEM files: ``ca`` signs ``server_*`` (for :data:`SERVER_NAME`) and ``client_*``; ``other_ca`` signs nothing used.

    ``other_key`` belongs to no certificate here, ``encrypted_key`` is
    ``client_key`` under a passphrase, ``not_a_certificate`` is text.
    """

    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_key: Path
    encrypted_key: Path
    not_a_certificate: Path


def make_certificates(directory: Path) -> Certificates:
    """Write the certificates into ``directory``."""
    import trustme
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA()
    server = ca.issue_cert(SERVER_NAME)
    # PostgreSQL's "cert" authentication takes the user name from the common name.
    client = ca.issue_cert("client.example", common_name=CLIENT_NAME)
    other = trustme.CA()
    stranger = other.issue_cert("stranger.example")
    directory.mkdir(parents=True, exist_ok=True)
    certs = Certificates(
        directory=directory,
        ca=directory / "ca.pem",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.pem",
        other_key=directory / "other.key",
        encrypted_key=directory / "encrypted.key",
        not_a_certificate=directory / "not-a-certificate.pem",
    )
    ca.cert_pem.write_to_path(str(certs.ca))
    certs.server_cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(certs.server_key))
    certs.client_cert.write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    client.private_key_pem.write_to_path(str(certs.client_key))
    other.cert_pem.write_to_path(str(certs.other_ca))
    stranger.private_key_pem.write_to_path(str(certs.other_key))
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    certs.encrypted_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    certs.not_a_certificate.write_text("this is not a PEM certificate\n")
    return certs


def _server_files(certs: Certificates) -> dict[str, Path]:
    return {"ca.pem": certs.ca, "server.crt": certs.server_cert, "server.key": certs.server_key}


def postgres_tls(certs: Certificates) -> dict[str, Any]:
    """Keyword arguments for :func:`dbtests.servers.postgres_cluster`: TLS on, with the server certificate."""
    return {
        "conf": {"ssl": "on", "ssl_cert_file": "server.crt", "ssl_key_file": "server.key", "ssl_ca_file": "ca.pem"},
        "files": _server_files(certs),
    }


@contextmanager
def mariadb_server(certs: Certificates | None) -> Iterator[MariaDBServer]:
    """A started :class:`~dbtests.servers.MariaDBServer`, with TLS from ``certs`` unless ``None``; removed after."""
    with mariadb(files=_server_files(certs) if certs is not None else None) as server:
        yield server


# --- a man in the middle ------------------------------------------------------------------------


class RecordingProxy(Relay):
    """A TCP relay on ``127.0.0.1:<port>`` to a real server that keeps every byte the client sent.

    ``greeting`` rewrites the server's first MySQL packet on its way to the
    client (see :func:`strip_mysql_tls`), as an attacker on the network could.
    """

    def __init__(self, target: tuple[str, int], greeting: Callable[[bytes], bytes] | None = None) -> None:
        super().__init__(target)
        self.greeting = greeting
        self.sent = bytearray()

    def from_client(self, data: bytes) -> None:
        self.sent += data

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await self.connect_upstream()
        if self.greeting is not None:
            header = await up_reader.readexactly(4)
            payload = self.greeting(await up_reader.readexactly(int.from_bytes(header[:3], "little")))
            writer.write(len(payload).to_bytes(3, "little") + header[3:] + payload)
        await self.relay(reader, writer, up_reader, up_writer)


@asynccontextmanager
async def recording_proxy(
    host: str, port: int, greeting: Callable[[bytes], bytes] | None = None
) -> AsyncIterator[RecordingProxy]:
    """A started :class:`RecordingProxy` to ``host:port``, closed afterwards."""
    proxy = RecordingProxy((host, port), greeting)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


CLIENT_SSL = 0x0800  # the capability bit by which a MySQL server offers TLS


def strip_mysql_tls(payload: bytes) -> bytes:
    """A MySQL server greeting (protocol 10) without TLS, asking for the password in clear text.

    Layout: version byte, server version (NUL-terminated), connection id (4),
    scramble part 1 (8), filler (1), capabilities (2 low bytes), ..., and last
    the authentication plugin's name (NUL-terminated).
    """
    assert payload[0] == 10, "not a protocol 10 greeting"
    caps_at = payload.index(b"\0", 1) + 1 + 4 + 8 + 1
    (caps,) = struct.unpack_from("<H", payload, caps_at)
    stripped = payload[:caps_at] + struct.pack("<H", caps & ~CLIENT_SSL) + payload[caps_at + 2 :]
    plugin_at = stripped.rindex(b"\0", 0, len(stripped) - 1) + 1
    return stripped[:plugin_at] + b"mysql_clear_password\0"
