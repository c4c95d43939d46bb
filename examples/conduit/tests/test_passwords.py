"""Passwords: stored as argon2id hashes only, never answered, never logged."""

from __future__ import annotations

import logging

import httpx
import pytest
from argon2 import PasswordHasher
from conduit.models import User
from conftest import unique
from sqlalchemy import select

from db_core import UnitOfWork

PASSWORD = "Pa55-word-in-clear-7731"


async def test_a_password_is_stored_hashed_and_appears_nowhere(base_url: str, caplog: pytest.LogCaptureFixture) -> None:
    username = unique("hashed")
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(base_url=base_url) as api:
        new = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
        registered = await api.post("/users", json={"user": new})
        login = {"email": new["email"], "password": PASSWORD}
        logged_in = await api.post("/users/login", json={"user": login})
        changed = await api.put(
            "/user",
            json={"user": {"password": PASSWORD + "!"}},
            headers={"Authorization": f"Token {logged_in.json()['user']['token']}"},
        )
    for response in (registered, logged_in, changed):
        assert response.status_code in (200, 201), response.text
        assert PASSWORD not in response.text
        assert "password" not in response.json()["user"]
    async with UnitOfWork(read_only=True) as session:
        stored = await session.scalar(select(User.password_hash).where(User.username == username))
    assert stored is not None
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    assert PasswordHasher().verify(stored, PASSWORD + "!")
    assert PASSWORD not in caplog.text
