"""Articles, the feed, favorites, comments and tags (``/articles``, ``/tags``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, Response
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from conduit import queries, schemas
from conduit.models import Comment, Favorite, utcnow
from conduit.security import CurrentUserId, ViewerId
from db_fastapi import ReadOnlyTransactionDep, TransactionDep

router = APIRouter()

Limit = Annotated[int, Query(ge=1, le=100, description="how many articles (at most 100)")]
Offset = Annotated[int, Query(ge=0, description="how many to skip")]


@router.get("/articles")
async def list_articles(
    viewer_id: ViewerId,
    session: ReadOnlyTransactionDep,
    tag: str | None = None,
    author: str | None = None,
    favorited: str | None = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> schemas.ArticlesResponse:
    """The most recent articles, filtered by tag, author or the user who favorited them."""
    await queries.check_viewer(session, viewer_id)
    return await queries.list_articles(
        session, viewer_id, tag=tag, author=author, favorited_by=favorited, limit=limit, offset=offset
    )


@router.get("/articles/feed")
async def feed(
    user_id: CurrentUserId, session: ReadOnlyTransactionDep, limit: Limit = 20, offset: Offset = 0
) -> schemas.ArticlesResponse:
    """The most recent articles of the authors the user follows."""
    await queries.get_user(session, user_id)
    return await queries.list_articles(session, user_id, feed=True, limit=limit, offset=offset)


@router.post("/articles", status_code=201)
async def create_article(
    user_id: CurrentUserId, article: Annotated[schemas.NewArticle, Body(embed=True)], session: TransactionDep
) -> schemas.ArticleResponse:
    """Write an article; its slug comes from its title."""
    await queries.get_user(session, user_id)
    new = await queries.create_article(session, user_id, article)
    return schemas.ArticleResponse(article=await queries.article_view(session, new.id, user_id))


@router.get("/articles/{slug}")
async def get_article(slug: str, viewer_id: ViewerId, session: ReadOnlyTransactionDep) -> schemas.ArticleResponse:
    """One article."""
    await queries.check_viewer(session, viewer_id)
    article = await queries.article_by_slug(session, slug)
    return schemas.ArticleResponse(article=await queries.article_view(session, article.id, viewer_id))


@router.put("/articles/{slug}")
async def update_article(
    slug: str,
    user_id: CurrentUserId,
    article: Annotated[schemas.UpdateArticle, Body(embed=True)],
    session: TransactionDep,
) -> schemas.ArticleResponse:
    """Change an article of one's own; a new title gives it a new slug."""
    await queries.get_user(session, user_id)
    own = await queries.own_article(session, slug, user_id)
    await queries.update_article(session, own, article)
    return schemas.ArticleResponse(article=await queries.article_view(session, own.id, user_id))


@router.delete("/articles/{slug}")
async def delete_article(slug: str, user_id: CurrentUserId, session: TransactionDep) -> Response:
    """Delete an article of one's own, with its comments and favorites."""
    await queries.get_user(session, user_id)
    await queries.delete_article(session, await queries.own_article(session, slug, user_id))
    return Response()


@router.post("/articles/{slug}/favorite")
async def favorite(slug: str, user_id: CurrentUserId, session: TransactionDep) -> schemas.ArticleResponse:
    """Favorite an article (twice is once)."""
    await queries.get_user(session, user_id)
    article = await queries.article_by_slug(session, slug)
    try:
        async with session.begin_nested():
            session.add(Favorite(user_id=user_id, article_id=article.id))
    except IntegrityError:
        pass  # favorited already; or deleted since, which article_view says (404)
    return schemas.ArticleResponse(article=await queries.article_view(session, article.id, user_id))


@router.delete("/articles/{slug}/favorite")
async def unfavorite(slug: str, user_id: CurrentUserId, session: TransactionDep) -> schemas.ArticleResponse:
    """Take a favorite back (not favorited is fine)."""
    await queries.get_user(session, user_id)
    article = await queries.article_by_slug(session, slug)
    await session.execute(delete(Favorite).where(Favorite.user_id == user_id, Favorite.article_id == article.id))
    return schemas.ArticleResponse(article=await queries.article_view(session, article.id, user_id))


@router.get("/articles/{slug}/comments")
async def list_comments(slug: str, viewer_id: ViewerId, session: ReadOnlyTransactionDep) -> schemas.CommentsResponse:
    """An article's comments, oldest first."""
    await queries.check_viewer(session, viewer_id)
    article = await queries.article_by_slug(session, slug)
    comments = (
        await session.scalars(
            select(Comment)
            .where(Comment.article_id == article.id)
            .options(joinedload(Comment.author))
            .order_by(Comment.id)
        )
    ).all()
    followed = await queries.followed_among(session, viewer_id, {comment.author_id for comment in comments})
    return schemas.CommentsResponse(comments=[_comment(comment, comment.author_id in followed) for comment in comments])


@router.post("/articles/{slug}/comments")
async def add_comment(
    slug: str, user_id: CurrentUserId, comment: Annotated[schemas.NewComment, Body(embed=True)], session: TransactionDep
) -> schemas.CommentResponse:
    """Comment on an article."""
    author = await queries.get_user(session, user_id)
    article = await queries.article_by_slug(session, slug)
    now = utcnow()
    new = Comment(body=comment.body, article_id=article.id, author_id=user_id, created_at=now, updated_at=now)
    new.author = author
    session.add(new)
    try:
        await session.flush()
    except IntegrityError:  # the article was deleted since it was read
        raise queries.not_found(f"article {slug!r}") from None
    return schemas.CommentResponse(comment=_comment(new, following=False))


@router.delete("/articles/{slug}/comments/{comment_id}")
async def delete_comment(slug: str, comment_id: int, user_id: CurrentUserId, session: TransactionDep) -> Response:
    """Delete a comment of one's own."""
    await queries.get_user(session, user_id)
    article = await queries.article_by_slug(session, slug)
    comment = await session.scalar(select(Comment).where(Comment.id == comment_id, Comment.article_id == article.id))
    if comment is None:
        raise queries.not_found("comment")
    if comment.author_id != user_id:
        raise HTTPException(status_code=403, detail="only its author may delete this comment")
    await session.delete(comment)
    return Response()


@router.get("/tags")
async def get_tags(session: ReadOnlyTransactionDep) -> schemas.TagsResponse:
    """The tags in use, the most used first."""
    return schemas.TagsResponse(tags=list(await queries.tags(session)))


def _comment(comment: Comment, following: bool) -> schemas.Comment:
    return schemas.Comment(
        id=comment.id,
        created_at=comment.created_at,
        updated_at=comment.updated_at,
        body=comment.body,
        author=queries.profile(comment.author, following),
    )
