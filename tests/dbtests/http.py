"""A real uvicorn server for the tests: :func:`running_uvicorn`."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

STARTUP_SECONDS = 10.0
SHUTDOWN_SECONDS = 10.0


@contextmanager
def running_uvicorn(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port; yields its base URL, stops it afterwards.

    uvicorn runs in a background thread with an event loop of its own; an
    engine used by the app is created in that loop and disposed by
    ``db_lifespan`` when the server shuts down.
    """
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only for such
    # sockets, and without it Nagle's algorithm adds ~40 ms to every response.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))  # bound here, so the port cannot be taken between choosing and serving
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="asyncio",
        http="h11",
        lifespan="on",
        log_config=None,  # leave the test process's logging alone; records still reach pytest
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped during startup"
            assert time.monotonic() < deadline, f"uvicorn did not start within {STARTUP_SECONDS}s"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(SHUTDOWN_SECONDS)
        if thread.is_alive():
            server.force_exit = True
            thread.join(SHUTDOWN_SECONDS)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not shut down"
