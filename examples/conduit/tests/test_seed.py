"""Demo content (conduit.seed): units of work no request starts, visible through the API afterwards."""

from __future__ import annotations

import random

import httpx
from conduit.seed import seed

from db_core import DatabaseSettings


async def test_seed_adds_users_articles_and_is_idempotent(db_setup: DatabaseSettings, base_url: str) -> None:
    created = await seed(2, 3, "demo-password", rng=random.Random(7))
    assert created == ["demo1", "demo2"]
    assert await seed(2, 3, "demo-password", rng=random.Random(7)) == []
    async with httpx.AsyncClient(base_url=base_url) as api:
        for username in created:
            listed = (await api.get("/articles", params={"author": username})).json()
            assert listed["articlesCount"] == 3
            login = {"email": f"{username}@example.com", "password": "demo-password"}
            assert (await api.post("/users/login", json={"user": login})).status_code == 200
