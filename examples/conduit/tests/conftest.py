"""The application under test, served by uvicorn over real HTTP on the run's test database.

db-pytest points the run at ``test_<DB_NAME>`` and builds it with the migrations
(``db_migrations`` in pyproject.toml). The server runs in a thread with its own event
loop, as one uvicorn worker; the tests are its HTTP clients. Nothing is rolled back
between tests (the requests commit in the server), so every test makes users and
articles with names of its own (:func:`unique`).
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
import uvicorn

from db_core import DatabaseSettings

# Tokens signed with a fixed key, so a test can make one the server accepts (or must refuse).
SECRET_KEY = "conduit-tests-secret-key-of-at-least-32-bytes"
os.environ["CONDUIT_SECRET_KEY"] = SECRET_KEY


def unique(prefix: str) -> str:
    """A name no other test uses: ``prefix`` and 10 hex digits."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def base_url(db_setup: DatabaseSettings) -> Iterator[str]:
    """``http://127.0.0.1:<port>/api`` of the application, served for the whole run."""
    config = uvicorn.Config("conduit.main:app", host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start (see the log above)")
        threading.Event().wait(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/api"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="session")
def api(base_url: str) -> Iterator[httpx.Client]:
    """An HTTP client of the API (paths relative to ``/api``), one for the run: it keeps its connection."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


@dataclass
class Account:
    """A registered user: what the API answered, the password, and the header that authenticates."""

    username: str
    email: str
    password: str
    token: str
    user: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}


def register(api: httpx.Client, prefix: str = "user") -> Account:
    """A new user, registered through the API."""
    username = unique(prefix)
    email = f"{username}@example.com"
    password = f"pw-{uuid.uuid4().hex}"
    response = api.post("/users", json={"user": {"username": username, "email": email, "password": password}})
    assert response.status_code == 201, response.text
    user = response.json()["user"]
    return Account(username, email, password, user["token"], user)


@pytest.fixture
def alice(api: httpx.Client) -> Account:
    """A registered user."""
    return register(api, "alice")


@pytest.fixture
def bob(api: httpx.Client) -> Account:
    """Another registered user."""
    return register(api, "bob")


# Registering hashes a password (argon2, tens of milliseconds): the tests that only need *some* user,
# whose assertions do not depend on what else that user did, share these three. They follow nobody,
# and their articles, favorites and comments are never counted (count those of fresh users, or by a
# tag of the test's own).


@pytest.fixture(scope="session")
def writer(api: httpx.Client) -> Account:
    """A user made once for the run, who writes articles: never count theirs, never follow with them."""
    return register(api, "writer")


@pytest.fixture(scope="session")
def reader(api: httpx.Client) -> Account:
    """Another user made once for the run (favorites, comments): never count theirs, never follow with them."""
    return register(api, "reader")


@pytest.fixture(scope="session")
def stranger(api: httpx.Client) -> Account:
    """A third user made once for the run, who is neither the author nor the commenter at hand."""
    return register(api, "stranger")


def create_article(api: httpx.Client, account: Account, **fields: Any) -> dict[str, Any]:
    """A new article of ``account``, created through the API: a unique title unless ``fields`` give one."""
    article = {"title": unique("Title "), "description": "A description", "body": "A body", **fields}
    response = api.post("/articles", json={"article": article}, headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()["article"]


def add_comment(api: httpx.Client, account: Account, slug: str, body: str = "A comment") -> dict[str, Any]:
    """A new comment of ``account`` on the article ``slug``."""
    response = api.post(f"/articles/{slug}/comments", json={"comment": {"body": body}}, headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()["comment"]


def follow(api: httpx.Client, follower: Account, followed: Account) -> None:
    """``follower`` follows ``followed``."""
    response = api.post(f"/profiles/{followed.username}/follow", headers=follower.headers)
    assert response.status_code == 200, response.text


def favorite(api: httpx.Client, account: Account, slug: str) -> dict[str, Any]:
    """``account`` favorites the article ``slug``: the article as the API answered."""
    response = api.post(f"/articles/{slug}/favorite", headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()["article"]


# --- What the responses look like -------------------------------------------------------------

# createdAt and updatedAt: UTC, with milliseconds.
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
USER_FIELDS = {"email", "token", "username", "bio", "image"}
PROFILE_FIELDS = {"username", "bio", "image", "following"}
ARTICLE_FIELDS = {"slug", "title", "description", "body", "tagList", "createdAt", "updatedAt", "favorited"}
ARTICLE_FIELDS |= {"favoritesCount", "author"}
COMMENT_FIELDS = {"id", "createdAt", "updatedAt", "body", "author"}


def error_messages(response: httpx.Response, status: int) -> list[str]:
    """The messages of an error answer, after checking its status and ``{"errors": {"body": [...]}}``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"errors"}, body
    assert set(body["errors"]) == {"body"}, body
    messages = body["errors"]["body"]
    assert isinstance(messages, list), body
    assert messages, body
    assert all(isinstance(message, str) and message for message in messages), body
    return messages


def assert_unauthorized(response: httpx.Response) -> None:
    """A 401 answer for a missing or invalid token: error body and ``WWW-Authenticate: Token``."""
    error_messages(response, 401)
    assert response.headers.get("www-authenticate") == "Token", response.headers


def check_timestamp(value: Any) -> datetime:
    """A createdAt/updatedAt value, checked (ISO 8601, UTC, milliseconds, Z) and parsed."""
    assert isinstance(value, str), value
    assert TIMESTAMP.match(value), value
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")


def check_user(user: dict[str, Any]) -> None:
    """The fields of a user (``{"user": ...}``) and their types: never a password."""
    assert set(user) == USER_FIELDS, user
    assert isinstance(user["email"], str), user
    assert isinstance(user["username"], str), user
    assert isinstance(user["token"], str), user
    assert user["token"], user
    assert user["bio"] is None or isinstance(user["bio"], str), user
    assert user["image"] is None or isinstance(user["image"], str), user


def check_profile(profile: dict[str, Any], username: str | None = None, following: bool | None = None) -> None:
    """The fields of a profile and their types; its username and following when given."""
    assert set(profile) == PROFILE_FIELDS, profile
    assert isinstance(profile["username"], str), profile
    assert profile["bio"] is None or isinstance(profile["bio"], str), profile
    assert profile["image"] is None or isinstance(profile["image"], str), profile
    assert isinstance(profile["following"], bool), profile
    if username is not None:
        assert profile["username"] == username, profile
    if following is not None:
        assert profile["following"] is following, profile


def check_article(article: dict[str, Any]) -> None:
    """The fields of an article and their types (its author a profile)."""
    assert set(article) == ARTICLE_FIELDS, article
    for field in ("slug", "title", "description", "body"):
        assert isinstance(article[field], str), article
    assert isinstance(article["tagList"], list), article
    assert all(isinstance(tag, str) for tag in article["tagList"]), article
    check_timestamp(article["createdAt"])
    check_timestamp(article["updatedAt"])
    assert isinstance(article["favorited"], bool), article
    assert type(article["favoritesCount"]) is int, article
    check_profile(article["author"])


def check_comment(comment: dict[str, Any]) -> None:
    """The fields of a comment and their types (its author a profile)."""
    assert set(comment) == COMMENT_FIELDS, comment
    assert type(comment["id"]) is int, comment
    assert isinstance(comment["body"], str), comment
    check_timestamp(comment["createdAt"])
    check_timestamp(comment["updatedAt"])
    check_profile(comment["author"])


def get_article(api: httpx.Client, slug: str, viewer: Account | None = None) -> dict[str, Any]:
    """GET /articles/{slug} (as ``viewer``): the article, checked."""
    response = api.get(f"/articles/{slug}", headers=viewer.headers if viewer else None)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"article"}, body
    check_article(body["article"])
    return body["article"]


def list_articles(
    api: httpx.Client, headers: dict[str, str] | None = None, *, path: str = "/articles", **params: Any
) -> dict[str, Any]:
    """GET /articles (or the feed's ``path``) with ``params``: the answer, each article checked."""
    response = api.get(path, params=params, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"articles", "articlesCount"}, body
    assert type(body["articlesCount"]) is int, body
    for article in body["articles"]:
        check_article(article)
    return body


# --- Tokens the server must refuse ----------------------------------------------------------


def user_id(account: Account) -> str:
    """The ``sub`` of an account's token: its user id."""
    return str(jwt.decode(account.token, options={"verify_signature": False})["sub"])


def make_token(claims: dict[str, Any], key: str = SECRET_KEY, expires_in: timedelta = timedelta(hours=1)) -> str:
    """A token of ``claims`` and an ``exp`` ``expires_in`` from now (in the past if negative), signed HS256."""
    return jwt.encode({**claims, "exp": datetime.now(UTC) + expires_in}, key, algorithm="HS256")


def bad_auth_headers(kind: str, sub: str) -> dict[str, str]:
    """The Authorization header (none for ``missing``) of a kind of bad credentials, for the user id ``sub``."""
    tokens = {
        "malformed": "not-a-jwt",
        "wrong-key": make_token({"sub": sub}, key="another-secret-key-of-at-least-32-bytes!"),
        "expired": make_token({"sub": sub}, expires_in=timedelta(minutes=-5)),
        "unknown-user": make_token({"sub": str(2**31 - 2)}),
        "non-numeric-sub": make_token({"sub": "somebody"}),
        "no-sub": make_token({}),
        "unsigned": jwt.encode({"sub": sub, "exp": datetime.now(UTC) + timedelta(hours=1)}, None, algorithm="none"),
    }
    if kind == "missing":
        return {}
    if kind == "no-token":
        return {"Authorization": "Token"}
    return {"Authorization": f"Token {tokens[kind]}"}


# A token that is there but invalid: refused by the endpoints where authentication is optional too.
INVALID_TOKENS = ["malformed", "wrong-key", "expired", "unknown-user", "non-numeric-sub", "no-sub", "unsigned"]
# No usable token at all: refused by the endpoints that require authentication.
BAD_AUTH = ["missing", "no-token", *INVALID_TOKENS]


@dataclass
class Target:
    """A user, an article of theirs and a comment on it: what the refused requests aim at."""

    account: Account
    slug: str
    comment_id: int

    def path(self, template: str) -> str:
        """``template`` with ``{username}``, ``{slug}`` and ``{comment_id}`` filled in."""
        return template.format(username=self.account.username, slug=self.slug, comment_id=self.comment_id)


@pytest.fixture(scope="session")
def target(api: httpx.Client) -> Target:
    """A user with an article and a comment, made once for the run."""
    account = register(api, "target")  # its own: the refused requests must leave it as it was
    article = create_article(api, account, tagList=[unique("target")])
    comment = add_comment(api, account, article["slug"])
    return Target(account, article["slug"], comment["id"])


@pytest.fixture(params=BAD_AUTH)
def bad_auth(request: pytest.FixtureRequest, target: Target) -> dict[str, str]:
    """Headers without usable credentials, one kind per parameter (a real user's id where a token has one)."""
    return bad_auth_headers(request.param, user_id(target.account))


@pytest.fixture(params=INVALID_TOKENS)
def invalid_token(request: pytest.FixtureRequest, target: Target) -> dict[str, str]:
    """Headers with a token that is present but invalid, one kind per parameter."""
    return bad_auth_headers(request.param, user_id(target.account))
