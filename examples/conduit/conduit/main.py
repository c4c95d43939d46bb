"""The application: ``uvicorn conduit.main:app``, the API under ``/api``.

The database is db's, from the ``DB_*`` settings (``DB_TYPE=sqlite``: the file ``app.db`` in the
working directory); its tables are made by ``db migrate upgrade`` before start-up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from conduit import articles, users
from conduit.settings import secret_key
from db_fastapi import add_exception_handlers, db_lifespan, health_router


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    secret_key()  # a CONDUIT_SECRET_KEY that is not valid stops the start-up, not the first login
    yield


app = FastAPI(title="Conduit", lifespan=db_lifespan(_lifespan))
add_exception_handlers(app)
app.include_router(users.router, prefix="/api")
app.include_router(articles.router, prefix="/api")
app.include_router(health_router())


def _errors(status_code: int, *messages: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """RealWorld's error body: ``{"errors": {"body": [...]}}``."""
    return JSONResponse({"errors": {"body": list(messages)}}, status_code=status_code, headers=headers)


@app.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return _errors(exc.status_code, str(exc.detail), headers=exc.headers)


@app.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    messages = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"] if part != "body")
        messages.append(f"{where}: {error['msg']}" if where else error["msg"])
    return _errors(422, *messages)
