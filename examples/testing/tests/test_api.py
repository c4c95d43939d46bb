"""Requests through the FastAPI dependencies are rolled back after each test."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("attempt", range(10))
async def test_the_same_address_is_created_in_every_test(client: httpx.AsyncClient, attempt: int) -> None:
    response = await client.post("/users", params={"email": "ada@example.com"})
    assert response.status_code == 201, response.text
    assert (await client.get("/users/count")).json() == 1


async def test_a_conflict_is_a_409_and_the_next_request_works(client: httpx.AsyncClient) -> None:
    assert (await client.post("/users", params={"email": "linus@example.com"})).status_code == 201
    assert (await client.post("/users", params={"email": "linus@example.com"})).status_code == 409
    assert (await client.post("/users", params={"email": "ken@example.com"})).status_code == 201
    assert (await client.get("/users/count")).json() == 2


async def test_an_override_set_by_a_test(db_app: FastAPI, client: httpx.AsyncClient) -> None:
    from db_fastapi import get_db_transaction

    async def refuse() -> None:
        raise RuntimeError("overridden")

    db_app.dependency_overrides[get_db_transaction] = refuse
    with pytest.raises(RuntimeError, match="overridden"):
        await client.post("/users", params={"email": "dennis@example.com"})


async def test_is_undone_for_the_next_test(db_app: FastAPI, client: httpx.AsyncClient) -> None:
    assert db_app.dependency_overrides == {}
    assert (await client.post("/users", params={"email": "dennis@example.com"})).status_code == 201
