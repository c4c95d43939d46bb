"""The demo service in examples/demo works on every backend, as the README shows it."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

from db_core import DatabaseSettings, get_engine

DEMO = Path(__file__).parents[1] / "examples" / "demo" / "app.py"


@pytest.fixture
async def demo(db: DatabaseSettings) -> AsyncIterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("db_demo_app", DEMO)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["db_demo_app"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("db_demo_app", None)
    async with get_engine().begin() as conn:
        await conn.run_sync(module.Base.metadata.drop_all)


def test_demo_requests(demo: ModuleType) -> None:
    with TestClient(demo.app) as client:
        created = client.post("/users", json={"name": "ada", "bio": "first programmer"})
        assert created.status_code == 201, created.text
        assert created.json() == {"id": 1, "name": "ada", "bio": "first programmer"}
        signed = client.post("/signup", json={"name": "alan", "bio": "computable numbers"})
        assert signed.status_code == 201, signed.text
        assert [u["name"] for u in client.get("/users").json()] == ["ada", "alan"]
        assert client.get(f"/users/{signed.json()['id']}").json()["bio"] == "computable numbers"
        assert client.post("/users", json={"name": "ada"}).status_code == 409
        assert client.post("/signup", json={"name": "alan"}).status_code == 409
        assert client.get("/users/999").status_code == 404
        # The failed requests left nothing behind.
        assert len(client.get("/users").json()) == 2
        health = client.get("/health").json()
        assert health["backend"] in ("sqlite", "postgresql", "mysql")
        assert health["connector"] in ("sqlite", "postgres", "mysql")
        assert "password" not in str(health).lower()
