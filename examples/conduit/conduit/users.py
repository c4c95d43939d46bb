"""Users and authentication (``/users``, ``/user``) and profiles (``/profiles``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from conduit import queries, schemas
from conduit.models import Follow, User
from conduit.security import CurrentUserId, ViewerId, create_token, hash_password, unauthorized, verify_password
from db_core import UnitOfWork
from db_fastapi import ReadOnlyTransactionDep, TransactionDep

router = APIRouter()


def _user_response(user: User) -> schemas.UserResponse:
    return schemas.UserResponse(
        user=schemas.User(
            email=user.email, token=create_token(user.id), username=user.username, bio=user.bio, image=user.image
        )
    )


def _taken(reason: str) -> HTTPException:
    return HTTPException(status_code=422, detail=reason)


@router.post("/users", status_code=201)
async def register(user: Annotated[schemas.NewUser, Body(embed=True)]) -> schemas.UserResponse:
    """Register a new user."""
    # Hashed before the transaction begins: no connection is held during the ~50 ms of hashing.
    password_hash = await hash_password(user.password)
    async with UnitOfWork() as session:
        reason = await queries.taken(session, username=user.username, email=user.email, other_than=None)
        if reason:
            raise _taken(reason)
        new = User(username=user.username, email=user.email, password_hash=password_hash)
        session.add(new)
        try:
            await session.flush()
        except IntegrityError:  # registered by another request since the check
            raise _taken("username or email has already been taken") from None
        return _user_response(new)


@router.post("/users/login")
async def login(user: Annotated[schemas.LoginUser, Body(embed=True)]) -> schemas.UserResponse:
    """Log in with e-mail and password."""
    async with UnitOfWork(read_only=True) as session:
        found = await session.scalar(select(User).where(User.email == user.email))
    # The connection is back in the pool before the password is checked.
    valid = await verify_password(found.password_hash if found else None, user.password)
    if found is None or not valid:
        raise unauthorized("email or password is invalid")
    return _user_response(found)


@router.get("/user")
async def current_user(user_id: CurrentUserId, session: ReadOnlyTransactionDep) -> schemas.UserResponse:
    """The logged-in user."""
    return _user_response(await queries.get_user(session, user_id))


@router.put("/user")
async def update_user(
    user_id: CurrentUserId, changes: Annotated[schemas.UpdateUser, Body(alias="user", embed=True)]
) -> schemas.UserResponse:
    """Change the logged-in user's details; only the fields given change."""
    password_hash = await hash_password(changes.password) if changes.password is not None else None
    async with UnitOfWork() as session:
        user = await queries.get_user(session, user_id)
        reason = await queries.taken(session, username=changes.username, email=changes.email, other_than=user_id)
        if reason:
            raise _taken(reason)
        for field in changes.model_fields_set & {"username", "email", "bio", "image"}:
            value = getattr(changes, field)
            if value is None and field in ("username", "email"):
                raise HTTPException(status_code=422, detail=f"{field} cannot be null")
            setattr(user, field, value)
        if password_hash is not None:
            user.password_hash = password_hash
        try:
            await session.flush()
        except IntegrityError:
            raise _taken("username or email has already been taken") from None
        return _user_response(user)


@router.get("/profiles/{username}")
async def get_profile(username: str, viewer_id: ViewerId, session: ReadOnlyTransactionDep) -> schemas.ProfileResponse:
    """A user's profile; ``following`` says whether the viewer follows them."""
    await queries.check_viewer(session, viewer_id)
    user = await queries.user_by_name(session, username)
    return schemas.ProfileResponse(
        profile=queries.profile(user, user.id in await queries.followed_among(session, viewer_id, {user.id}))
    )


@router.post("/profiles/{username}/follow")
async def follow(username: str, user_id: CurrentUserId, session: TransactionDep) -> schemas.ProfileResponse:
    """Follow a user (following twice is following)."""
    await queries.get_user(session, user_id)
    user = await queries.user_by_name(session, username)
    if user.id == user_id:
        raise HTTPException(status_code=422, detail="you cannot follow yourself")
    try:
        async with session.begin_nested():
            session.add(Follow(follower_id=user_id, followed_id=user.id))
    except IntegrityError:
        pass  # already followed
    return schemas.ProfileResponse(profile=queries.profile(user, True))


@router.delete("/profiles/{username}/follow")
async def unfollow(username: str, user_id: CurrentUserId, session: TransactionDep) -> schemas.ProfileResponse:
    """Stop following a user (not following is fine)."""
    await queries.get_user(session, user_id)
    user = await queries.user_by_name(session, username)
    await session.execute(delete(Follow).where(Follow.follower_id == user_id, Follow.followed_id == user.id))
    return schemas.ProfileResponse(profile=queries.profile(user, False))
