"""Reading and writing articles, users and profiles: plain functions of an ``AsyncSession``.

The routes (:mod:`conduit.articles`, :mod:`conduit.users`) call these with the
session db gives them; so can a script, a test or a benchmark with a session of
its own.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import HTTPException
from sqlalchemy import ColumnElement, Select, delete, exists, false, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from conduit import schemas
from conduit.models import Article, ArticleTag, Favorite, Follow, User, utcnow
from conduit.security import unauthorized

SLUG_ATTEMPTS = 5


def not_found(what: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"{what} not found")


# -- users and profiles -----------------------------------------------------------------------------------------------


async def get_user(session: AsyncSession, user_id: int) -> User:
    """The user a token names; 401 if there is none (the token outlived its user, or the database)."""
    user = await session.get(User, user_id)
    if user is None:
        raise unauthorized("the token's user does not exist")
    return user


async def check_viewer(session: AsyncSession, viewer_id: int | None) -> None:
    """Where logging in is optional: a token is still refused if its user does not exist."""
    if viewer_id is not None:
        await get_user(session, viewer_id)


async def user_by_name(session: AsyncSession, username: str) -> User:
    user = await session.scalar(select(User).where(User.username == username))
    if user is None:
        raise not_found(f"profile {username!r}")
    return user


async def followed_among(session: AsyncSession, viewer_id: int | None, user_ids: set[int]) -> set[int]:
    """Which of ``user_ids`` the viewer follows (none without a viewer)."""
    if viewer_id is None or not user_ids:
        return set()
    followed = await session.scalars(
        select(Follow.followed_id).where(Follow.follower_id == viewer_id, Follow.followed_id.in_(user_ids))
    )
    return set(followed)


def profile(user: User, following: bool) -> schemas.Profile:
    return schemas.Profile(username=user.username, bio=user.bio, image=user.image, following=following)


async def taken(
    session: AsyncSession, *, username: str | None, email: str | None, other_than: int | None
) -> str | None:
    """Which of ``username`` and ``email`` another user already has, as the error to show (``None``: neither)."""
    for column, value in ((User.username, username), (User.email, email)):
        if value is None:
            continue
        query = select(User.id).where(column == value)
        if other_than is not None:
            query = query.where(User.id != other_than)
        if await session.scalar(query) is not None:
            return f"{column.key} has already been taken"
    return None


# -- articles ---------------------------------------------------------------------------------------------------------


def slugify(title: str) -> str:
    """``How to Train Your Dragon!`` → ``how-to-train-your-dragon`` (letters of any script, digits and _ are kept)."""
    return re.sub(r"\W+", "-", title.lower()).strip("-")[:240] or "article"


def _slugs(title: str) -> Iterator[str]:
    """The slug of ``title``, then the same with a random suffix, for when it is taken."""
    base = slugify(title)
    yield base
    for _ in range(SLUG_ATTEMPTS - 1):
        yield f"{base}-{secrets.token_hex(3)}"


def _article_rows(viewer_id: int | None) -> Select[Any]:
    """Articles with their author, tags, favorites count and the viewer's favorited and following flags."""
    favorites_count = (
        select(func.count()).select_from(Favorite).where(Favorite.article_id == Article.id).scalar_subquery()
    )
    favorited: ColumnElement[bool]
    following: ColumnElement[bool]
    if viewer_id is None:
        favorited = following = false()
    else:
        favorited = exists().where(Favorite.article_id == Article.id, Favorite.user_id == viewer_id)
        following = exists().where(Follow.follower_id == viewer_id, Follow.followed_id == Article.author_id)
    return select(
        Article,
        favorites_count.label("favorites_count"),
        favorited.label("favorited"),
        following.label("following"),
    ).options(joinedload(Article.author), selectinload(Article.tags))


def _view(row: Any) -> schemas.Article:
    article: Article = row.Article
    return schemas.Article(
        slug=article.slug,
        title=article.title,
        description=article.description,
        body=article.body,
        tag_list=[tag.name for tag in article.tags],
        created_at=article.created_at,
        updated_at=article.updated_at,
        favorited=bool(row.favorited),
        favorites_count=row.favorites_count,
        author=profile(article.author, bool(row.following)),
    )


async def article_view(session: AsyncSession, article_id: int, viewer_id: int | None) -> schemas.Article:
    row = (await session.execute(_article_rows(viewer_id).where(Article.id == article_id))).one_or_none()
    if row is None:
        raise not_found("article")
    return _view(row)


async def article_by_slug(session: AsyncSession, slug: str) -> Article:
    article = await session.scalar(select(Article).where(Article.slug == slug))
    if article is None:
        raise not_found(f"article {slug!r}")
    return article


async def own_article(session: AsyncSession, slug: str, user_id: int) -> Article:
    """The article ``slug``, if ``user_id`` wrote it: 404 if there is none, 403 if another user did."""
    article = await article_by_slug(session, slug)
    if article.author_id != user_id:
        raise HTTPException(status_code=403, detail="only the author may change or delete this article")
    return article


async def list_articles(
    session: AsyncSession,
    viewer_id: int | None,
    *,
    tag: str | None = None,
    author: str | None = None,
    favorited_by: str | None = None,
    feed: bool = False,
    limit: int = 20,
    offset: int = 0,
) -> schemas.ArticlesResponse:
    """A page of articles, newest first, and how many match in all."""
    where: list[ColumnElement[bool]] = []
    if tag is not None:
        where.append(Article.id.in_(select(ArticleTag.article_id).where(ArticleTag.name == tag)))
    if author is not None:
        where.append(Article.author_id.in_(select(User.id).where(User.username == author)))
    if favorited_by is not None:
        fans = select(Favorite.article_id).join(User, User.id == Favorite.user_id).where(User.username == favorited_by)
        where.append(Article.id.in_(fans))
    if feed:
        where.append(Article.author_id.in_(select(Follow.followed_id).where(Follow.follower_id == viewer_id)))
    count = await session.scalar(select(func.count()).select_from(Article).where(*where))
    rows = await session.execute(
        _article_rows(viewer_id).where(*where).order_by(Article.id.desc()).limit(limit).offset(offset)
    )
    return schemas.ArticlesResponse(articles=[_view(row) for row in rows], articles_count=count or 0)


async def create_article(session: AsyncSession, author_id: int, new: schemas.NewArticle) -> Article:
    """A new article by ``author_id``, under the first of its slugs no other article has.

    The unique index on ``slug`` decides, also between two requests at once
    (a check before inserting could not: both would find the slug free). Each
    attempt is a savepoint, so a taken slug undoes only that attempt; after
    :data:`SLUG_ATTEMPTS` the last error is raised.
    """
    now = utcnow()
    for slug in _slugs(new.title):
        article = Article(
            slug=slug,
            title=new.title,
            description=new.description,
            body=new.body,
            author_id=author_id,
            created_at=now,
            updated_at=now,
            tags=[ArticleTag(name=name) for name in new.tag_list],
        )
        try:
            async with session.begin_nested():
                session.add(article)
        except IntegrityError as exc:
            # The slug is the one key an article of a known author can collide on (the tags are distinct).
            error = exc
            continue
        return article
    raise error


async def update_article(session: AsyncSession, article: Article, changes: schemas.UpdateArticle) -> None:
    """Apply ``changes``; a new title gives a new slug (as at creation)."""
    if changes.description is not None:
        article.description = changes.description
    if changes.body is not None:
        article.body = changes.body
    if changes.tag_list is not None:
        await session.execute(delete(ArticleTag).where(ArticleTag.article_id == article.id))
        session.add_all(ArticleTag(article_id=article.id, name=name) for name in changes.tag_list)
    article.updated_at = utcnow()
    if changes.title is not None and changes.title != article.title:
        article.title = changes.title
        await session.flush()
        await _change_slug(session, article, changes.title)
    await session.flush()


async def _change_slug(session: AsyncSession, article: Article, title: str) -> None:
    for slug in _slugs(title):
        if slug == article.slug:
            return
        try:
            async with session.begin_nested():
                await session.execute(update(Article).where(Article.id == article.id).values(slug=slug))
        except IntegrityError as exc:
            error = exc
            continue
        set_committed_value(article, "slug", slug)
        return
    raise error


async def delete_article(session: AsyncSession, article: Article) -> None:
    """Delete ``article``: its comments, favorites and tags go with it (``ON DELETE CASCADE``), in this transaction."""
    await session.execute(delete(Article).where(Article.id == article.id))
    session.expunge(article)


async def tags(session: AsyncSession) -> Sequence[str]:
    """The tags in use, the most used first."""
    usage = func.count()
    rows = await session.scalars(
        select(ArticleTag.name).group_by(ArticleTag.name).order_by(usage.desc(), ArticleTag.name)
    )
    return rows.all()
