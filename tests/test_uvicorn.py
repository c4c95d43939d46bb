"""db_fastapi under a real uvicorn server, over real HTTP, on every backend.

uvicorn (:func:`dbtests.http.running_uvicorn`) runs in a background thread
with an event loop of its own; the engine is created lazily in that loop and
disposed by ``db_lifespan`` when the server shuts down.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import httpx2
from fastapi import FastAPI, HTTPException, Request
from sqlalchemy import func, select

from db_core import UnitOfWork
from db_fastapi import SessionDep, TransactionDep, db_lifespan
from dbtests.http import running_uvicorn

ROUNDS = 200
ROUNDS_SECONDS = 60.0  # about 2 s on a quiet machine; a bound, not a benchmark


def users_app(schema: SimpleNamespace) -> FastAPI:
    """POST /users/{name} inserts (TransactionDep, 201); GET /users/{name} reads it back (SessionDep)."""
    app = FastAPI(lifespan=db_lifespan())
    user = schema.User

    @app.post("/users/{name}", status_code=201)
    async def create_user(name: str, request: Request, session: TransactionDep) -> dict[str, Any]:
        # Not flushed: the INSERT is sent by the commit, which must finish before this response leaves.
        session.add(user(name=name))
        assert request.client is not None
        return {"name": name, "client_port": request.client.port}

    @app.get("/users/{name}")
    async def read_user(name: str, request: Request, session: SessionDep) -> dict[str, Any]:
        found = await session.scalar(select(user).where(user.name == name))
        if found is None:
            raise HTTPException(status_code=404, detail=f"no user {name!r}")
        assert request.client is not None
        return {"name": found.name, "id": found.id, "client_port": request.client.port}

    return app


async def test_commit_happens_before_the_response_over_one_keep_alive_connection(schema: SimpleNamespace) -> None:
    missing: list[tuple[int, int]] = []
    client_ports: set[int] = set()
    # One connection only: each GET goes out on the socket that just carried the POST's response.
    limits = httpx2.Limits(max_connections=1, max_keepalive_connections=1)
    with running_uvicorn(users_app(schema)) as base_url:
        with httpx2.Client(base_url=base_url, timeout=10, limits=limits) as client:
            started = time.monotonic()
            for i in range(ROUNDS):
                assert time.monotonic() - started < ROUNDS_SECONDS, f"only {i} of {ROUNDS} rounds in {ROUNDS_SECONDS}s"
                name = f"user-{i}"
                created = client.post(f"/users/{name}")
                assert created.status_code == 201, created.text
                client_ports.add(created.json()["client_port"])
                found = client.get(f"/users/{name}")
                if found.status_code == 200:
                    assert found.json()["name"] == name
                    client_ports.add(found.json()["client_port"])
                else:
                    missing.append((i, found.status_code))

            assert missing == [], f"{len(missing)} of {ROUNDS} GETs did not see the row just created: {missing[:10]}"
            assert len(client_ports) == 1, (
                f"expected one keep-alive connection, saw client ports {sorted(client_ports)}"
            )

            # A commit that fails (a duplicate name, sent by the commit's flush) is a 500, never a 201.
            duplicate = client.post("/users/user-0")
            assert duplicate.status_code == 500, duplicate.text

        # uvicorn closes a connection whose app raised after responding; the server goes on serving.
        with httpx2.Client(base_url=base_url, timeout=10) as client:
            assert client.get("/users/user-0").status_code == 200

    async with UnitOfWork() as session:
        assert await session.scalar(select(func.count()).select_from(schema.User)) == ROUNDS
