"""Concurrency: 50 users at once over real HTTP, the outcome checked in the database itself.

Each simulated user has an HTTP client (and connection) of its own, opened and warmed
up before the burst; an :class:`asyncio.Barrier` releases all of them at once. The
server is the run's uvicorn (``base_url``); the final state is read from the tables with
db's :class:`~db_core.UnitOfWork` on the test's event loop (the same test database).

- Favorites never lose an update: the count is what the ``favorites`` table holds, and
  equals the number of users whose last action was a favorite.
- Articles with the same title created at once get distinct slugs, never a 500.
- Deleting an article removes its comments, favorites and tags in the same transaction,
  while 50 clients keep commenting on and favoriting it.

On SQLite (one writer at a time) the server's requests take turns on its one connection;
the properties hold all the same, so every test runs on every backend.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest
from conduit.models import Article, ArticleTag, Comment, Favorite
from conftest import Account, unique, user_id
from sqlalchemy import func, select

from db_core import UnitOfWork

USERS = 50
TIMEOUT = 60  # seconds an HTTP request may take: far more than any should, less than forever

T = TypeVar("T")


# --- The server's errors, to show with a failed status -------------------------------------------------------------


class _Collect(logging.Handler):
    """The server's log records at WARNING or above, each with the end of its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []
        self.arrived = threading.Event()
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        lines = self.format(record).splitlines()
        self.records.append("\n".join(lines[:1] + (["  ..."] if len(lines) > 13 else []) + lines[1:][-12:]))
        self.arrived.set()

    def clear(self) -> None:
        self.records.clear()
        self.arrived.clear()


_SERVER_LOG = _Collect()


@pytest.fixture(scope="module", autouse=True)
def _server_log() -> Iterator[None]:
    """Collect what the server logs (uvicorn logs a 500's traceback) while the module runs."""
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "db_fastapi", "db_core")]
    for logger in loggers:
        logger.addHandler(_SERVER_LOG)
    yield
    for logger in loggers:
        logger.removeHandler(_SERVER_LOG)


@pytest.fixture(autouse=True)
def _server_log_of_the_test() -> None:
    _SERVER_LOG.clear()


def server_errors() -> str:
    """The server's log of this test so far, for an assertion message."""
    if not _SERVER_LOG.records:
        return "(the server logged nothing)"
    return "server log:\n" + "\n".join(_SERVER_LOG.records)


def expect(response: httpx.Response, *statuses: int) -> httpx.Response:
    """``response``, after checking that its status is one of ``statuses`` (with the server's log if not)."""
    if response.status_code not in statuses and response.status_code >= 500:
        # uvicorn logs the traceback of a 500 once the response is sent: wait for it (a failure only).
        _SERVER_LOG.arrived.wait(2)
    assert response.status_code in statuses, (
        f"{response.request.method} {response.request.url.path} -> {response.status_code} "
        f"(expected {statuses}): {response.text}\n{server_errors()}"
    )
    return response


# --- Users, their clients, and bursts ------------------------------------------------------------------------------


@dataclass
class Crowd:
    """The module's registered users, each with an HTTP client of its own: ``users`` act at once, ``author`` writes."""

    users: list[Account]
    author: Account
    clients: dict[str, httpx.AsyncClient]  # username -> its client, authenticated as that user
    live: str  # the liveness route (no database), to open the clients' connections

    def id(self, account: Account) -> int:
        """The ``users.id`` of ``account``."""
        return int(user_id(account))

    async def ready(self) -> tuple[httpx.AsyncClient, list[httpx.AsyncClient]]:
        """The author's client and the users', each with its connection open, so a burst is requests only."""
        opened = [self.clients[account.username] for account in (self.author, *self.users)]
        for response in await asyncio.gather(*(client.get(self.live) for client in opened)):
            expect(response, 200)
        return opened[0], opened[1:]


async def _register(client: httpx.AsyncClient, prefix: str) -> Account:
    username = unique(prefix)
    email = f"{username}@example.com"
    password = f"pw-{uuid.uuid4().hex}"
    response = await client.post("/users", json={"user": {"username": username, "email": email, "password": password}})
    expect(response, 201)
    user = response.json()["user"]
    return Account(username, email, password, user["token"], user)


@pytest.fixture(scope="module")
async def crowd(base_url: str) -> AsyncIterator[Crowd]:
    """51 users registered at once (registration hashes each password for ~50 ms), and their clients."""
    async with httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as client:
        accounts = await asyncio.gather(
            *(_register(client, "crowd") for _ in range(USERS)), _register(client, "writer")
        )
    async with AsyncExitStack() as stack:
        clients = {
            account.username: await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, headers=account.headers, timeout=TIMEOUT)
            )
            for account in accounts
        }
        yield Crowd(list(accounts[:USERS]), accounts[USERS], clients, base_url.removesuffix("/api") + "/health/live")


async def burst(crowd: Crowd, actions: list[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run ``actions`` concurrently, all released at the same moment; their results in order.

    The crowd's connections are opened again first: uvicorn closes one idle for 5 s, and a request
    sent at that moment would fail in the client (``Server disconnected``), not in the application.
    """
    await crowd.ready()
    barrier = asyncio.Barrier(len(actions))

    async def run(action: Callable[[], Awaitable[T]]) -> T:
        await barrier.wait()
        return await action()

    return list(await asyncio.gather(*(run(action) for action in actions)))


async def new_article(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    article = {"title": unique("Concurrency "), "description": "A description", "body": "A body", **fields}
    response = expect(await client.post("/articles", json={"article": article}), 201)
    return response.json()["article"]


# --- The database, read directly -------------------------------------------------------------------------------------


async def article_id(slug: str) -> int:
    async with UnitOfWork() as session:
        found = await session.scalar(select(Article.id).where(Article.slug == slug))
    assert found is not None, f"no row in articles for {slug!r}"
    return found


async def favoriters(article: int) -> list[int]:
    """The ``user_id`` of each row of ``favorites`` for ``article`` (duplicates kept, if there were any)."""
    async with UnitOfWork() as session:
        return list(await session.scalars(select(Favorite.user_id).where(Favorite.article_id == article)))


async def references(article: int) -> dict[str, int]:
    """How many rows of each table refer to ``article`` (``articles``: whether it exists), in one statement.

    One statement reads one snapshot on every backend, so the four counts are of the same moment.
    """

    def count(model: Any, column: Any) -> Any:
        return select(func.count()).select_from(model).where(column == article).scalar_subquery()

    query = select(
        count(Article, Article.id).label("articles"),
        count(Comment, Comment.article_id).label("comments"),
        count(Favorite, Favorite.article_id).label("favorites"),
        count(ArticleTag, ArticleTag.article_id).label("article_tags"),
    )
    async with UnitOfWork(read_only=True) as session:
        row = (await session.execute(query)).one()
    return dict(row._mapping)


# --- 1. Favorites never lose an update -------------------------------------------------------------------------------


async def favorite(client: httpx.AsyncClient, slug: str, method: str = "POST", flag: bool = True) -> dict[str, Any]:
    """Favorite (POST) or unfavorite (DELETE) ``slug``: 200, the article as the user now sees it.

    ``flag``: check that the answer says ``favorited`` true after a POST, false after a DELETE.
    """
    article = expect(await client.request(method, f"/articles/{slug}/favorite"), 200).json()["article"]
    assert 0 <= article["favoritesCount"] <= USERS, article
    if flag:
        assert article["favorited"] is (method == "POST"), f"{method} favorite answered {article}"
    return article


async def favorites_count(client: httpx.AsyncClient, slug: str) -> int:
    count = expect(await client.get(f"/articles/{slug}"), 200).json()["article"]["favoritesCount"]
    assert type(count) is int, count
    return count


async def assert_favorited_by(client: httpx.AsyncClient, slug: str, crowd: Crowd, accounts: list[Account]) -> None:
    """The API and the ``favorites`` table both say: exactly ``accounts`` favorite ``slug``."""
    expected = sorted(crowd.id(account) for account in accounts)
    rows = sorted(await favoriters(await article_id(slug)))
    assert rows == expected, f"favorites rows: {len(rows)}, expected {len(expected)}\n{server_errors()}"
    assert await favorites_count(client, slug) == len(expected)


async def test_fifty_users_favorite_one_article_at_once(crowd: Crowd) -> None:
    writer, users = await crowd.ready()
    slug = (await new_article(writer))["slug"]
    answers = await burst(crowd, [lambda client=client: favorite(client, slug) for client in users])
    # Each answer counts at least its own favorite, read after it in the same transaction.
    assert all(answer["favoritesCount"] >= 1 for answer in answers)
    await assert_favorited_by(writer, slug, crowd, crowd.users)


async def test_all_unfavorite_and_half_favorite_again_at_once(crowd: Crowd) -> None:
    writer, users = await crowd.ready()
    slug = (await new_article(writer))["slug"]
    await burst(crowd, [lambda client=client: favorite(client, slug) for client in users])
    await assert_favorited_by(writer, slug, crowd, crowd.users)

    async def unfavorite_then_maybe_again(client: httpx.AsyncClient, again: bool) -> None:
        await favorite(client, slug, "DELETE")
        if again:
            await favorite(client, slug, "POST")

    await burst(
        crowd, [lambda c=client, i=i: unfavorite_then_maybe_again(c, i % 2 == 0) for i, client in enumerate(users)]
    )
    await assert_favorited_by(writer, slug, crowd, crowd.users[::2])


async def test_users_alternate_favorite_and_unfavorite_at_once(crowd: Crowd) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    # Each user's own sequence, in order: alternating, from a random first action, 1 to 4 actions long.
    sequences = []
    for _ in crowd.users:
        first = rng.choice(["POST", "DELETE"])
        other = "DELETE" if first == "POST" else "POST"
        sequences.append([first if step % 2 == 0 else other for step in range(rng.randint(1, 4))])

    writer, users = await crowd.ready()
    slug = (await new_article(writer))["slug"]
    # Half of them favorite it first, so that every kind of transition happens.
    await burst(crowd, [lambda client=client: favorite(client, slug) for client in users[1::2]])

    async def run(client: httpx.AsyncClient, sequence: list[str]) -> None:
        for method in sequence:
            await favorite(client, slug, method)

    await burst(
        crowd, [lambda c=client, s=sequence: run(c, s) for client, sequence in zip(users, sequences, strict=True)]
    )
    last_favorite = [user for user, sequence in zip(crowd.users, sequences, strict=True) if sequence[-1] == "POST"]
    try:
        await assert_favorited_by(writer, slug, crowd, last_favorite)
    except AssertionError as error:
        error.add_note(f"random seed: {seed}")
        raise


async def test_each_user_favorites_twice_at_once(crowd: Crowd) -> None:
    writer, users = await crowd.ready()
    slug = (await new_article(writer))["slug"]
    # Both requests of a user at once (two connections of its client), the 50 users at once too.
    favorited = await burst(
        crowd, [lambda c=client: favorite(c, slug, flag=False) for client in users for _ in range(2)]
    )
    await assert_favorited_by(writer, slug, crowd, crowd.users)
    # And both unfavorites at once: no row left, no error.
    unfavorited = await burst(
        crowd, [lambda c=client: favorite(c, slug, "DELETE", flag=False) for client in users for _ in range(2)]
    )
    await assert_favorited_by(writer, slug, crowd, [])
    # Each answer is the article as its user sees it once the request is done: favorited after a POST
    # (the other request's row, or its own), not after a DELETE.
    wrong = [("POST", a) for a in favorited if a["favorited"] is not True]
    wrong += [("DELETE", a) for a in unfavorited if a["favorited"] is not False]
    assert not wrong, (
        f"{len(wrong)} of {len(favorited) + len(unfavorited)} answers had the wrong favorited flag, e.g. "
        + "; ".join(
            f"{method} -> favorited {a['favorited']}, favoritesCount {a['favoritesCount']}" for method, a in wrong[:4]
        )
    )


# --- 2. The same title at once: distinct slugs -----------------------------------------------------------------------


def plain_slug(title: str) -> str:
    """The slug a title gets when no other article has it: lower case, runs of non-word characters as ``-``."""
    return re.sub(r"\W+", "-", title.lower()).strip("-")


async def create_same_title(crowd: Crowd, accounts: list[Account]) -> None:
    marker = uuid.uuid4().hex[:10]
    title = f"Race: the Same Title, {marker}!"
    assert plain_slug(title) == f"race-the-same-title-{marker}"
    fields = {"title": title, "description": "At once", "body": "The same title as the others"}
    await crowd.ready()
    opened = [crowd.clients[account.username] for account in accounts]
    responses = await burst(
        crowd, [lambda client=client: client.post("/articles", json={"article": fields}) for client in opened]
    )
    for response in responses:
        expect(response, 201)
    articles = [response.json()["article"] for response in responses]
    slugs = [article["slug"] for article in articles]
    assert len(set(slugs)) == len(accounts), slugs
    assert slugs.count(plain_slug(title)) == 1, slugs
    assert all(slug.startswith(plain_slug(title)) for slug in slugs), slugs
    assert [article["author"]["username"] for article in articles] == [account.username for account in accounts]
    assert all(article["title"] == title for article in articles)

    async with UnitOfWork() as session:
        rows = (await session.execute(select(Article.slug, Article.author_id).where(Article.title == title))).all()
    assert sorted(rows) == sorted(
        (article["slug"], int(user_id(account))) for article, account in zip(articles, accounts, strict=True)
    )


async def test_two_articles_with_the_same_title_at_once(crowd: Crowd) -> None:
    await create_same_title(crowd, crowd.users[:2])


async def test_fifty_articles_with_the_same_title_at_once(crowd: Crowd) -> None:
    await create_same_title(crowd, crowd.users)


# --- 3. Deleting an article while others comment on it and favorite it ----------------------------------------------

SEEDED = 20  # comments and favorites the article has before the burst
ROUNDS = 200  # requests a client makes at most while the article is there


@dataclass
class Observer:
    """What one client saw of the article, request after request (each starts after the last was answered).

    It records rather than asserts, so that the tests below each judge one property of the same burst.
    """

    client: httpx.AsyncClient
    slug: str
    seeded_comments: set[int]
    comments: set[int] = field(default_factory=set)  # the comments it knows exist, while the article does
    favorites: int = SEEDED  # the least favorites count it may see while the article exists (nobody unfavorites)
    gone: bool = False  # it had a 404: from then on, only 404s
    writes: int = 0
    statuses: list[tuple[str, int]] = field(default_factory=list)
    wrong_statuses: list[str] = field(default_factory=list)  # not 200 or 404, or a 200 after a 404
    fewer_comments: list[str] = field(default_factory=list)  # 200 without comments it knew existed
    fewer_favorites: list[str] = field(default_factory=list)  # 200 with a smaller count than it saw before

    def __post_init__(self) -> None:
        self.comments = set(self.seeded_comments)

    def answer(self, what: str, response: httpx.Response) -> dict[str, Any] | None:
        """The body of a 200, ``None`` otherwise; notes a status other than 200 and 404, and a 200 after a 404."""
        self.statuses.append((what, response.status_code))
        if response.status_code not in (200, 404) or (self.gone and response.status_code == 200):
            after = " after a 404" if self.gone else ""
            self.wrong_statuses.append(f"{what}: {response.status_code}{after}: {response.text[:300]}")
        if response.status_code != 200:
            self.gone = self.gone or response.status_code == 404
            return None
        return response.json()

    async def comment(self) -> None:
        path = f"/articles/{self.slug}/comments"
        body = self.answer("POST comments", await self.client.post(path, json={"comment": {"body": "Still here?"}}))
        if body is not None:
            self.comments.add(body["comment"]["id"])
            self.writes += 1

    async def favorite(self) -> None:
        body = self.answer("POST favorite", await self.client.post(f"/articles/{self.slug}/favorite"))
        if body is not None:
            self.check_count("POST favorite", body["article"])
            self.writes += 1

    async def read_article(self) -> None:
        body = self.answer("GET article", await self.client.get(f"/articles/{self.slug}"))
        if body is not None:
            self.check_count("GET article", body["article"])

    async def read_comments(self) -> None:
        body = self.answer("GET comments", await self.client.get(f"/articles/{self.slug}/comments"))
        if body is not None:
            seen = {comment["id"] for comment in body["comments"]}
            missing = self.comments - seen
            if missing:
                self.fewer_comments.append(
                    f"200 with {len(seen)} comments, without {len(missing)} known to exist "
                    f"({len(missing & self.seeded_comments)} of the {SEEDED} made before the burst)"
                )
            self.comments |= seen

    def check_count(self, what: str, article: dict[str, Any]) -> None:
        # The view reads the article and counts its favorites in one statement (one snapshot).
        if article["favoritesCount"] < self.favorites:
            self.fewer_favorites.append(f"{what}: favoritesCount {article['favoritesCount']} after {self.favorites}")
        self.favorites = max(self.favorites, article["favoritesCount"])


@dataclass
class Deletion:
    """One burst: the author deletes an article while 50 clients comment on it, favorite it and read it."""

    article_id: int
    tags: int
    response: httpx.Response  # the author's DELETE
    observers: list[Observer]
    snapshots: list[dict[str, int]]  # the tables, each read in one statement, during the burst
    after: dict[str, int]  # the tables once it is over
    comments_left: int  # of the comments answered 200, how many are still in the table
    server_log: str


@pytest.fixture(scope="module")
async def deletion(crowd: Crowd) -> Deletion:
    """The burst, run once for the tests below, its outcome recorded."""
    _SERVER_LOG.clear()
    tags = [unique("deleted") for _ in range(3)]
    writer, users = await crowd.ready()
    slug = (await new_article(writer, tagList=tags))["slug"]
    seeded = await asyncio.gather(
        *(client.post(f"/articles/{slug}/comments", json={"comment": {"body": "Before"}}) for client in users[:SEEDED]),
        *(client.post(f"/articles/{slug}/favorite") for client in users[-SEEDED:]),
    )
    seeded_comments = {expect(response, 200).json()["comment"]["id"] for response in seeded[:SEEDED]}
    for response in seeded[SEEDED:]:
        expect(response, 200)
    article = await article_id(slug)  # kept to check the tables once the row is gone
    before = await references(article)
    assert before == {"articles": 1, "comments": SEEDED, "favorites": SEEDED, "article_tags": len(tags)}, before

    observers = [Observer(client, slug, seeded_comments) for client in users]
    busy = asyncio.Event()  # enough writes since the burst began: time to delete
    deleted = asyncio.Event()
    snapshots: list[dict[str, int]] = []

    async def keep_at_it(observer: Observer, offset: int) -> None:
        actions = [observer.comment, observer.favorite, observer.read_article, observer.read_comments]
        for step in range(ROUNDS):
            await actions[(step + offset) % len(actions)]()
            if sum(o.writes for o in observers) >= USERS:
                busy.set()
            if observer.gone:
                break
        for action in actions:  # once gone, gone for every kind of request
            await action()

    async def delete() -> httpx.Response:
        await asyncio.wait_for(busy.wait(), TIMEOUT)
        try:
            return await writer.delete(f"/articles/{slug}")
        finally:
            deleted.set()

    async def watch() -> None:
        # The tables, read in one statement (one snapshot) again and again until the article is gone.
        while True:
            after_delete = deleted.is_set()
            snapshot = await references(article)
            snapshots.append(snapshot)
            if snapshot["articles"] == 0 or after_delete:
                return

    results = await burst(
        crowd,
        [
            delete,
            *(lambda o=observer, i=i: keep_at_it(o, i) for i, observer in enumerate(observers)),
            *(watch for _ in range(3)),
        ],
    )
    if results[0].status_code >= 500 or any(observer.wrong_statuses for observer in observers):
        _SERVER_LOG.arrived.wait(2)  # uvicorn logs a 500's traceback once the response is sent
    known = set().union(*(observer.comments for observer in observers))
    async with UnitOfWork() as session:
        left = await session.scalar(select(func.count()).select_from(Comment).where(Comment.id.in_(known)))
    return Deletion(
        article, len(tags), results[0], observers, snapshots, await references(article), left or 0, server_errors()
    )


NOTHING = {"articles": 0, "comments": 0, "favorites": 0, "article_tags": 0}


def test_deleting_an_article_while_fifty_users_use_it(deletion: Deletion) -> None:
    """The DELETE answers 200, every other request 200 before it or 404 after it, never a 500."""
    assert deletion.response.status_code == 200, f"DELETE: {deletion.response.text}\n{deletion.server_log}"
    wrong = [status for observer in deletion.observers for status in observer.wrong_statuses]
    assert not wrong, f"{len(wrong)} wrong answers, e.g. {wrong[:5]}\n{deletion.server_log}"
    # The delete came in the middle of the burst: requests succeeded before it, and every client saw it.
    statuses = [status for observer in deletion.observers for _, status in observer.statuses]
    assert statuses.count(200) >= USERS, statuses
    assert all(observer.gone for observer in deletion.observers), f"still there after {ROUNDS} requests"


def test_deleting_an_article_removes_its_comments_favorites_and_tags(deletion: Deletion) -> None:
    """Afterwards no row of comments, favorites or article_tags refers to the article, whose row is gone."""
    assert deletion.after == NOTHING, f"{deletion.after}\n{deletion.server_log}"
    assert deletion.comments_left == 0, f"{deletion.comments_left} comments answered 200 outlived their article"


def test_deleting_an_article_is_one_transaction(deletion: Deletion) -> None:
    """No reader ever saw the article with part of its comments, favorites or tags gone, or them without it.

    In the tables: each snapshot (the four counts read in one statement) shows the article with at least
    what it had before the burst (nobody deletes a comment or unfavorites), or nothing at all. Through the
    API: GET /articles/{slug} reads the article and counts its favorites in one statement, and never
    answered 200 with fewer favorites than the same client had seen before.
    """
    assert any(snapshot["articles"] for snapshot in deletion.snapshots), "no snapshot was read before the delete"
    for snapshot in deletion.snapshots:
        if snapshot["articles"]:
            assert snapshot["comments"] >= SEEDED, deletion.snapshots
            assert snapshot["favorites"] >= SEEDED, deletion.snapshots
            assert snapshot["article_tags"] == deletion.tags, deletion.snapshots
        else:
            assert snapshot == NOTHING, deletion.snapshots
    fewer = [line for observer in deletion.observers for line in observer.fewer_favorites]
    assert not fewer, fewer[:5]


def test_comments_of_a_deleted_article_never_vanish_before_it(deletion: Deletion) -> None:
    """GET /articles/{slug}/comments never answered 200 without comments that existed a moment before.

    Each client knows the comments made before the burst, its own and those it has seen: while the
    article exists, none of them is deleted, so a 200 must list them all. A 200 with them gone is a
    state that never was in the tables when the delete is one transaction (the test above checks that):
    it means the endpoint read the article and its comments in two snapshots (two statements under
    READ COMMITTED, PostgreSQL's default), the delete committing between them.
    """
    fewer = [line for observer in deletion.observers for line in observer.fewer_comments]
    assert not fewer, f"{len(fewer)} such answers, e.g. {fewer[:3]}"
