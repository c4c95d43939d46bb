from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
import service
from fastapi import FastAPI


@pytest.fixture
def app() -> FastAPI:
    """The application under test; db_app restores its dependency_overrides after each test."""
    return service.app


@pytest_asyncio.fixture  # an async fixture in strict mode too
async def client(db_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client calling the app in-process, on the test's event loop: its requests join the test's transaction."""
    transport = httpx.ASGITransport(app=db_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client
