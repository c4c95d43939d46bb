"""Demo content: ``python -m conduit.seed --users 5 --articles 3`` (after ``db migrate upgrade``).

Work that no request starts, so it opens its units of work itself: one
:class:`~db_core.UnitOfWork` per user with all of their articles, committed as
a whole. Users that exist already are left as they are, so running it again
adds only what is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import random
import sys

from sqlalchemy import select

from conduit import queries, schemas
from conduit.models import Article, Favorite, Follow, User
from conduit.security import hash_password
from db_core import UnitOfWork, dispose_engine

WORDS = [
    "async",
    "database",
    "pool",
    "transaction",
    "replica",
    "migration",
    "index",
    "lock",
    "savepoint",
    "commit",
    "query",
    "schema",
]
TAGS = ["python", "sqlalchemy", "fastapi", "postgres", "mariadb", "sqlite"]


async def seed(users: int, articles: int, password: str, *, rng: random.Random | None = None) -> list[str]:
    """Users ``demo1``..``demoN`` (``password``), each with ``articles`` articles; the usernames created."""
    rng = rng or random.Random()
    password_hash = await hash_password(password)
    created: list[str] = []
    for number in range(1, users + 1):
        username = f"demo{number}"
        async with UnitOfWork() as session:
            if await session.scalar(select(User.id).where(User.username == username)) is not None:
                continue
            user = User(username=username, email=f"{username}@example.com", password_hash=password_hash)
            session.add(user)
            await session.flush()
            for _ in range(articles):
                title = " ".join(rng.sample(WORDS, 3)).capitalize()
                new = schemas.NewArticle(
                    title=title,
                    description=f"On {title.lower()}",
                    body=f"Everything about {title.lower()}.",
                    tag_list=rng.sample(TAGS, rng.randint(1, 3)),
                )
                await queries.create_article(session, user.id, new)
        created.append(username)
    await _follow_and_favorite(rng)
    return created


async def _follow_and_favorite(rng: random.Random) -> None:
    """Every demo user follows one other and favorites a few articles that are not yet theirs."""
    async with UnitOfWork() as session:
        demo = (await session.scalars(select(User.id).where(User.username.like("demo%")))).all()
        articles = (await session.scalars(select(Article.id))).all()
        follows = {tuple(row) for row in await session.execute(select(Follow.follower_id, Follow.followed_id))}
        favorites = {tuple(row) for row in await session.execute(select(Favorite.user_id, Favorite.article_id))}
        for user_id in demo:
            others = [other for other in demo if other != user_id]
            if others and not any(pair[0] == user_id for pair in follows):
                session.add(Follow(follower_id=user_id, followed_id=rng.choice(others)))
            for article_id in rng.sample(articles, min(3, len(articles))):
                if (user_id, article_id) not in favorites:
                    session.add(Favorite(user_id=user_id, article_id=article_id))
                    favorites.add((user_id, article_id))


def main() -> None:
    """The command line: the demo users' password is asked, or read from standard input, never an argument."""
    parser = argparse.ArgumentParser(prog="python -m conduit.seed", description="Demo users and articles.")
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--articles", type=int, default=3, help="articles per user")
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the demo users' password from standard input"
    )
    args = parser.parse_args()
    try:
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("demo password: ")
    except (EOFError, KeyboardInterrupt):
        parser.exit(1, "no password given: nothing was written\n")
    if len(password) < 8:
        parser.error("the password needs 8 characters or more")

    async def run() -> list[str]:
        try:
            return await seed(args.users, args.articles, password)
        finally:
            await dispose_engine()

    created = asyncio.run(run())
    print(f"created {len(created)} users: {', '.join(created) or 'none (they exist)'}")


if __name__ == "__main__":
    main()
