"""The app of the multi-worker test: ``uvicorn processes.workers_app:app --workers 2``.

``GET /who`` answers which worker process served it and which database
connection (the server's id for it) its unit of work ran on.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from sqlalchemy import text

from db_core import get_settings
from db_fastapi import TransactionDep, db_lifespan

app = FastAPI(lifespan=db_lifespan())


@app.get("/who")
async def who(session: TransactionDep) -> dict[str, int]:
    """This worker's pid and the database connection's id."""
    query = "SELECT pg_backend_pid()" if get_settings().type == "postgres" else "SELECT CONNECTION_ID()"
    return {"worker": os.getpid(), "connection": int(await session.scalar(text(query)) or 0)}
