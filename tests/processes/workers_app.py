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
from dbtests.queries import OWN_ID

app = FastAPI(lifespan=db_lifespan())


@app.get("/who")
async def who(session: TransactionDep) -> dict[str, int]:
    """This worker's pid and the database connection's id."""
    query = text(OWN_ID[get_settings().type or ""])
    return {"worker": os.getpid(), "connection": int(await session.scalar(query) or 0)}
