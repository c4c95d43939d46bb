"""A TCP relay on ``127.0.0.1`` to a real server, for tests that stand between a client and its server.

:class:`Relay` forwards every connection it accepts, both ways; a subclass
decides what happens to a connection instead (:meth:`Relay.serve`) or looks at
what the client sends (:meth:`Relay.from_client`). :meth:`Relay.cut` drops
every connection it holds, as a server restart or a network failure would,
and goes on accepting new ones; :meth:`Relay.close` also stops listening.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

__all__ = ["Relay", "TurnCounter", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Relay:
    """Forwards every connection accepted on ``127.0.0.1:<port>`` (a free one) to ``target``, once started."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.accepted = 0
        """How many connections it has accepted."""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on :attr:`port`."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Close every relayed connection, both ways, and wait until they are gone; keep listening."""
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    async def close(self) -> None:
        """Stop listening and close every relayed connection."""
        if self._server is not None:
            self._server.close()
        await self.cut()
        if self._server is not None:
            await self._server.wait_closed()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: relayed to the target both ways, until either side closes."""
        await self.relay(reader, writer, *await self.connect_upstream())

    async def connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A new connection to the target, closed by :meth:`cut` and :meth:`close`."""
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers.add(up_writer)
        return up_reader, up_writer

    async def relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        """Copy both ways between the client and the target until either side closes."""
        await asyncio.gather(
            self._pipe(reader, up_writer, self.from_client), self._pipe(up_reader, writer, self.from_server)
        )

    def from_client(self, data: bytes) -> None:
        """Every chunk the client sends, on its way to the target (for a subclass to keep)."""

    def from_server(self, data: bytes) -> None:
        """Every chunk the target sends, on its way to the client (for a subclass to keep)."""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.accepted += 1
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self.serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        seen: Callable[[bytes], None] | None = None,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if seen is not None:
                    seen(data)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            self._writers.discard(writer)


class TurnCounter(Relay):
    """A relay that counts round trips: the client's turns to speak.

    A turn starts each time the client sends after the server has answered
    (or first); several packets the client sends in a row are one turn.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__(target)
        self.turns = 0
        self._client_spoke_last = False

    def from_client(self, data: bytes) -> None:
        """Count a new turn when the server had the last word."""
        if not self._client_spoke_last:
            self.turns += 1
        self._client_spoke_last = True

    def from_server(self, data: bytes) -> None:
        """The server answered: the client's next send is a new turn."""
        self._client_spoke_last = False
