"""The API's request and response bodies (RealWorld's JSON: camelCase, times in UTC with milliseconds)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    PlainSerializer,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


Timestamp = Annotated[datetime, PlainSerializer(_timestamp, return_type=str)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
Username = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\s/]+$")]
Email = Annotated[EmailStr, StringConstraints(max_length=254), AfterValidator(str.lower)]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


def _tag_list(tags: list[str]) -> list[str]:
    return sorted(set(tags))


TagList = Annotated[list[Tag], Field(max_length=50), AfterValidator(_tag_list)]


class Schema(BaseModel):
    """camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Changes(Schema):
    """A partial update: the fields given change, and at least one must be."""

    @model_validator(mode="after")
    def _some_change(self) -> Self:
        if not self.model_fields_set:
            fields = ", ".join(field.alias or name for name, field in type(self).model_fields.items())
            raise ValueError(f"give at least one of {fields}")
        return self


# -- requests ---------------------------------------------------------------------------------------------------------


class NewUser(Schema):
    username: Username
    email: Email
    password: Password


class LoginUser(Schema):
    email: Email
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class UpdateUser(Changes):
    """Only the fields given change; ``bio`` and ``image`` may be set to null."""

    username: Username | None = None
    email: Email | None = None
    password: Password | None = None
    bio: str | None = None
    image: Annotated[str, StringConstraints(max_length=2048)] | None = None


class NewArticle(Schema):
    title: Title
    description: Text
    body: Text
    tag_list: TagList = []


class UpdateArticle(Changes):
    title: Title | None = None
    description: Text | None = None
    body: Text | None = None
    tag_list: TagList | None = None


class NewComment(Schema):
    body: Text


# -- responses --------------------------------------------------------------------------------------------------------


class User(Schema):
    email: str
    token: str
    username: str
    bio: str | None
    image: str | None


class Profile(Schema):
    username: str
    bio: str | None
    image: str | None
    following: bool


class Article(Schema):
    slug: str
    title: str
    description: str
    body: str
    tag_list: list[str]
    created_at: Timestamp
    updated_at: Timestamp
    favorited: bool
    favorites_count: int
    author: Profile


class Comment(Schema):
    id: int
    created_at: Timestamp
    updated_at: Timestamp
    body: str
    author: Profile


class UserResponse(Schema):
    user: User


class ProfileResponse(Schema):
    profile: Profile


class ArticleResponse(Schema):
    article: Article


class ArticlesResponse(Schema):
    articles: list[Article]
    articles_count: int


class CommentResponse(Schema):
    comment: Comment


class CommentsResponse(Schema):
    comments: list[Comment]


class TagsResponse(Schema):
    tags: list[str]
