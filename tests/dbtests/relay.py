"""A TCP relay on ``127.0.0.1`` to a real server, for tests that stand between a client and its server.

:class:`Relay` forwards every connection it accepts, both ways; a subclass
decides what happens to a connection instead (:meth:`Relay.serve`) or looks at
what the client sends (:meth:`Relay.from_client`). :meth:`Relay.close` ends
every connection it holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from dbtests.servers import free_port


class Relay:
    """Forwards every connection accepted on ``127.0.0.1:<port>`` (a free one) to ``target``, once started."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: relayed to the target both ways, until either side closes."""
        await self.relay(reader, writer, *await self.connect_upstream())

    async def connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
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
        await asyncio.gather(self._pipe(reader, up_writer, self.from_client), self._pipe(up_reader, writer))

    def from_client(self, data: bytes) -> None:
        """Every chunk the client sends, on its way to the target (for a subclass to keep)."""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
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
