"""W6 and W7: the Conduit example's (``examples/conduit``) own SQLAlchemy code, in a unit of work of each contender.

- W6, ``GET /api/articles``'s query: ``conduit.queries.list_articles(session, viewer, limit=20)``,
  the 20 newest articles with their authors, tags, favorites counts and the viewer's favorited
  and following flags, and how many there are in all (three statements), in a read transaction.
- W7, ``POST /api/articles``'s transaction: ``conduit.queries.create_article`` inserts an
  article with 3 tags under the slug of its title, and commits. Every 10th operation reuses a
  title a seeded article has, so its slug is taken and the article goes in under a suffixed
  one: a savepoint that fails and another that holds.

Only two contenders make sense, as the code under test is the application's: ``sqlalchemy``
(``async with sessionmaker() as session, session.begin():``) and ``db`` (``UnitOfWork()``, and
``UnitOfWork(read_only=True)`` for W6, as the endpoint's ``ReadOnlyTransactionDep``).

The data (:func:`seed`): Conduit's tables (``Base.metadata.create_all``) beside ``bench_items``,
with 50 users, 1,000 articles with 1-3 tags of 20, favorites and follows. :func:`tidy` deletes
W7's articles after each run of it, so W6 always lists and counts the same 1,000.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Protocol

from conduit import queries, schemas
from conduit.models import Article, ArticleTag, Base, Favorite, Follow, User
from sqlalchemy import delete, insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from backends import Backend
from contenders import DRIVERS, bare_sessionmaker, library
from db_core import UnitOfWork

NAMES = ("sqlalchemy", "db")
WORKLOADS = ("W6", "W7")
USERS = 50
ARTICLES = 1_000
TAGS = tuple(f"tag-{n:02d}" for n in range(20))
FAVORITES_PER_USER = 20
FOLLOWS_PER_USER = 10
REPEATED_TITLE = "How to train your dragon"  # every 10th W7 operation's; seed article 1 has its slug
_article_numbers = itertools.count(1)


class ConduitContender(Protocol):
    """One way of running Conduit's units of work."""

    async def list_articles(self) -> schemas.ArticlesResponse:
        """W6: the 20 newest articles, as a random user sees them."""

    async def create_article(self) -> None:
        """W7: a new article with 3 tags, committed."""


def operation(contender: ConduitContender, workload: str) -> Callable[[], Awaitable[object]]:
    """One W6 or W7 operation of ``contender``."""
    return contender.list_articles if workload == "W6" else contender.create_article


@asynccontextmanager
async def started(name: str, backend: Backend, pool_size: int, max_overflow: int) -> AsyncIterator[ConduitContender]:
    """Contender ``name`` (of :data:`NAMES`) on ``backend``, set up as :func:`contenders.started` sets it up."""
    if name == "db":
        async with library(backend, pool_size, max_overflow):
            yield LibraryConduit()
    else:
        async with bare_sessionmaker(name, backend, pool_size, max_overflow) as maker:
            yield SessionConduit(maker)


def _viewer() -> int:
    return random.randint(1, USERS)


def _new_article() -> tuple[int, schemas.NewArticle]:
    """The next W7 article: its author and body, every 10th under :data:`REPEATED_TITLE`."""
    n = next(_article_numbers)
    title = REPEATED_TITLE if n % 10 == 0 else f"Benchmark article {n}"
    new = schemas.NewArticle(
        title=title,
        description=f"What article {n} is about",
        body=f"Article {n} of the benchmark. " * 20,
        tag_list=[TAGS[n % 20], TAGS[(n + 7) % 20], TAGS[(n + 13) % 20]],
    )
    return n % USERS + 1, new


class SessionConduit:
    """``async with sessionmaker() as session, session.begin():``, bare SQLAlchemy's unit of work."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker

    async def list_articles(self) -> schemas.ArticlesResponse:
        async with self.sessionmaker() as session, session.begin():
            return await queries.list_articles(session, _viewer(), limit=20)

    async def create_article(self) -> None:
        author, new = _new_article()
        async with self.sessionmaker() as session, session.begin():
            await queries.create_article(session, author, new)


class LibraryConduit:
    """``async with UnitOfWork() as session:`` (``read_only=True`` for W6)."""

    async def list_articles(self) -> schemas.ArticlesResponse:
        async with UnitOfWork(read_only=True) as session:
            return await queries.list_articles(session, _viewer(), limit=20)

    async def create_article(self) -> None:
        author, new = _new_article()
        async with UnitOfWork() as session:
            await queries.create_article(session, author, new)


async def seed(backend: Backend) -> None:
    """Conduit's tables in ``backend``'s benchmark database, with their rows (bulk inserts, a second or two)."""
    rng = random.Random(6)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    users = [
        {"id": u, "username": f"user{u}", "email": f"user{u}@example.com", "password_hash": "-", "bio": None}
        for u in range(1, USERS + 1)
    ]
    articles = [
        {
            "id": a,
            "slug": f"seed-article-{a}",
            "title": f"Seed article {a}",
            "description": f"What seed article {a} is about",
            "body": f"Seed article {a}. " * 40,
            "author_id": a % USERS + 1,
            "created_at": start + timedelta(minutes=a),
            "updated_at": start + timedelta(minutes=a),
        }
        for a in range(1, ARTICLES + 1)
    ]
    # Every W7 operation that reuses the title finds its slug taken, the first after a tidy() too.
    articles[0].update(slug=queries.slugify(REPEATED_TITLE), title=REPEATED_TITLE)
    tags = [
        {"article_id": a, "name": TAGS[(a * 7 + k * 3) % len(TAGS)]}
        for a in range(1, ARTICLES + 1)
        for k in range(a % 3 + 1)
    ]
    # A quarter of each user's favorites among the 20 newest articles, so W6's page has its counts and flags.
    favorites = [
        {"user_id": u, "article_id": a}
        for u in range(1, USERS + 1)
        for a in sorted(
            set(rng.sample(range(1, ARTICLES + 1), FAVORITES_PER_USER * 3 // 4))
            | set(rng.sample(range(ARTICLES - 19, ARTICLES + 1), FAVORITES_PER_USER // 4))
        )
    ]
    follows = [
        {"follower_id": u, "followed_id": f}
        for u in range(1, USERS + 1)
        for f in sorted(rng.sample([o for o in range(1, USERS + 1) if o != u], FOLLOWS_PER_USER))
    ]
    engine = create_async_engine(backend.url(DRIVERS[backend.name]), poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            for model, rows in (
                (User, users),
                (Article, articles),
                (ArticleTag, tags),
                (Favorite, favorites),
                (Follow, follows),
            ):
                await conn.execute(insert(model), rows)
            if backend.name == "postgres":
                # The ids were given: the sequences go on from them.
                for table, last in (("users", USERS), ("articles", ARTICLES)):
                    await conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {last})"))
                await conn.execute(text("ANALYZE"))
    finally:
        await engine.dispose()


async def tidy(backend: Backend) -> None:
    """Delete the articles W7 wrote (and their tags), so that W6 reads the seeded 1,000 only."""
    engine = create_async_engine(backend.url(DRIVERS[backend.name]), poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            # Not left to ON DELETE CASCADE: SQLite enforces foreign keys only when asked to.
            await conn.execute(delete(ArticleTag).where(ArticleTag.article_id > ARTICLES))
            await conn.execute(delete(Article).where(Article.id > ARTICLES))
    finally:
        await engine.dispose()
