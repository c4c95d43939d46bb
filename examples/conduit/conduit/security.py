"""Passwords (argon2id) and tokens (JWT, HS256), and the dependencies that read the ``Authorization`` header.

Hashing takes tens of milliseconds of CPU on purpose: it runs in a worker thread,
never on the event loop, and never while a database connection is held.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, HTTPException, Request

from conduit.settings import get_settings, secret_key

_hasher = PasswordHasher()
_ALGORITHM = "HS256"
_SCHEMES = ("token", "bearer")
# Compared against when the e-mail is unknown, so a login takes as long either way.
_UNKNOWN_USER_HASH = _hasher.hash("a password no user has")


async def hash_password(password: str) -> str:
    """The argon2id hash to store (it holds its own salt and parameters)."""
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash`` (``None``: no such user; still hashed, for even timing)."""
    try:
        return await asyncio.to_thread(_hasher.verify, password_hash or _UNKNOWN_USER_HASH, password) and (
            password_hash is not None
        )
    except (VerificationError, InvalidHashError):
        return False


def create_token(user_id: int) -> str:
    """A signed token naming the user, valid for ``CONDUIT_TOKEN_LIFETIME_SECONDS``."""
    expires = datetime.now(UTC) + timedelta(seconds=get_settings().token_lifetime_seconds)
    return jwt.encode({"sub": str(user_id), "exp": expires}, secret_key(), algorithm=_ALGORITHM)


def unauthorized(reason: str) -> HTTPException:
    """A 401 that tells the client how to authenticate."""
    return HTTPException(status_code=401, detail=reason, headers={"WWW-Authenticate": "Token"})


def _user_id(request: Request) -> int | None:
    """The user the ``Authorization`` header names, ``None`` without one; 401 for a header that is not valid."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() not in _SCHEMES or not token.strip():
        raise unauthorized("the Authorization header must be `Token <jwt>`")
    try:
        claims = jwt.decode(token.strip(), secret_key(), algorithms=[_ALGORITHM], options={"require": ["exp", "sub"]})
        return int(claims["sub"])
    except jwt.ExpiredSignatureError:
        raise unauthorized("the token has expired: log in again") from None
    except (jwt.InvalidTokenError, ValueError):
        raise unauthorized("the token is not valid (signed with another key?): log in again") from None


def _required_user_id(user_id: Annotated[int | None, Depends(_user_id)]) -> int:
    if user_id is None:
        raise unauthorized("this needs a logged-in user: send `Authorization: Token <jwt>`")
    return user_id


CurrentUserId = Annotated[int, Depends(_required_user_id)]
"""The id of the user the request's token names; 401 without a valid token."""

ViewerId = Annotated[int | None, Depends(_user_id)]
"""The same where logging in is optional: ``None`` without a token (still 401 for an invalid one)."""
