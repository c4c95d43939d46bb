"""Comments: POST and GET /articles/{slug}/comments, DELETE /articles/{slug}/comments/{id}.

A comment has an integer id, UTC timestamps and its author's profile (``following`` as the viewer
sees it); the list is oldest first; only its author deletes a comment; an unknown article or
comment, or the id of another article's comment, is a 404.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import (
    Account,
    Target,
    add_comment,
    assert_unauthorized,
    check_comment,
    check_profile,
    create_article,
    error_messages,
    follow,
    unique,
)


def list_comments(api: httpx.Client, slug: str, viewer: Account | None = None) -> list[dict[str, Any]]:
    response = api.get(f"/articles/{slug}/comments", headers=viewer.headers if viewer else None)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"comments"}, body
    assert isinstance(body["comments"], list), body
    for comment in body["comments"]:
        check_comment(comment)
    return body["comments"]


def test_add_comment(api: httpx.Client, writer: Account, reader: Account) -> None:
    article = create_article(api, writer)
    payload = {"comment": {"body": "Nice!"}}
    response = api.post(f"/articles/{article['slug']}/comments", json=payload, headers=reader.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"comment"}
    comment = body["comment"]
    check_comment(comment)
    assert comment["body"] == "Nice!"
    assert comment["createdAt"] == comment["updatedAt"]
    check_profile(comment["author"], reader.username, following=False)
    assert (comment["author"]["bio"], comment["author"]["image"]) == (None, None)


def test_list_comments_oldest_first(api: httpx.Client, writer: Account, reader: Account) -> None:
    article = create_article(api, writer)
    first = add_comment(api, reader, article["slug"], "first")
    second = add_comment(api, writer, article["slug"], "second")
    third = add_comment(api, reader, article["slug"], "third")
    comments = list_comments(api, article["slug"])
    assert comments == [first, second, third]
    assert [c["author"]["username"] for c in comments] == [reader.username, writer.username, reader.username]
    assert len({c["id"] for c in comments}) == 3


def test_list_comments_of_an_article_without_any(api: httpx.Client, writer: Account) -> None:
    article = create_article(api, writer)
    assert list_comments(api, article["slug"]) == []


def test_list_comments_only_of_that_article(api: httpx.Client, writer: Account) -> None:
    one, other = create_article(api, writer), create_article(api, writer)
    mine = add_comment(api, writer, one["slug"], "on one")
    add_comment(api, writer, other["slug"], "on the other")
    assert list_comments(api, one["slug"]) == [mine]


def test_list_comments_as_the_viewer_sees_it(
    api: httpx.Client, alice: Account, writer: Account, reader: Account
) -> None:
    article = create_article(api, writer)
    add_comment(api, reader, article["slug"])
    follow(api, alice, reader)
    assert list_comments(api, article["slug"], alice)[0]["author"]["following"] is True
    assert list_comments(api, article["slug"], writer)[0]["author"]["following"] is False
    assert list_comments(api, article["slug"])[0]["author"]["following"] is False


def test_comments_of_an_unknown_article_are_404(api: httpx.Client, writer: Account) -> None:
    slug = unique("no-such-article-")
    error_messages(api.get(f"/articles/{slug}/comments"), 404)
    error_messages(api.post(f"/articles/{slug}/comments", json={"comment": {"body": "x"}}, headers=writer.headers), 404)


@pytest.mark.parametrize(
    "payload",
    [{"comment": {"body": ""}}, {"comment": {}}, {"comment": {"body": 3}}, {"body": "no wrapper"}],
    ids=["empty-body", "no-body", "body-not-a-string", "no-comment"],
)
def test_add_comment_refuses_invalid_fields(api: httpx.Client, writer: Account, payload: dict[str, Any]) -> None:
    article = create_article(api, writer)
    error_messages(api.post(f"/articles/{article['slug']}/comments", json=payload, headers=writer.headers), 422)
    assert list_comments(api, article["slug"]) == []


def test_delete_own_comment(api: httpx.Client, writer: Account, reader: Account) -> None:
    article = create_article(api, writer)
    kept = add_comment(api, writer, article["slug"], "kept")
    gone = add_comment(api, reader, article["slug"], "gone")
    response = api.delete(f"/articles/{article['slug']}/comments/{gone['id']}", headers=reader.headers)
    assert response.status_code == 200, response.text
    assert list_comments(api, article["slug"]) == [kept]
    error_messages(api.delete(f"/articles/{article['slug']}/comments/{gone['id']}", headers=reader.headers), 404)


def test_delete_comment_of_another_user_is_403(
    api: httpx.Client, writer: Account, reader: Account, stranger: Account
) -> None:
    article = create_article(api, writer)
    comment = add_comment(api, reader, article["slug"])
    error_messages(api.delete(f"/articles/{article['slug']}/comments/{comment['id']}", headers=stranger.headers), 403)
    assert list_comments(api, article["slug"]) == [comment]


def test_article_author_cannot_delete_the_comment_of_another_user(
    api: httpx.Client, writer: Account, reader: Account
) -> None:
    article = create_article(api, writer)
    comment = add_comment(api, reader, article["slug"])
    error_messages(api.delete(f"/articles/{article['slug']}/comments/{comment['id']}", headers=writer.headers), 403)
    assert list_comments(api, article["slug"]) == [comment]


def test_delete_unknown_comment_is_404(api: httpx.Client, writer: Account) -> None:
    article = create_article(api, writer)
    comment = add_comment(api, writer, article["slug"])
    missing = comment["id"] + 1_000_000
    error_messages(api.delete(f"/articles/{article['slug']}/comments/{missing}", headers=writer.headers), 404)


def test_delete_comment_of_another_article_is_404(api: httpx.Client, writer: Account) -> None:
    one, other = create_article(api, writer), create_article(api, writer)
    comment = add_comment(api, writer, one["slug"])
    error_messages(api.delete(f"/articles/{other['slug']}/comments/{comment['id']}", headers=writer.headers), 404)
    assert list_comments(api, one["slug"]) == [comment]


def test_delete_comment_of_an_unknown_article_is_404(api: httpx.Client, writer: Account) -> None:
    article = create_article(api, writer)
    comment = add_comment(api, writer, article["slug"])
    slug = unique("no-such-article-")
    error_messages(api.delete(f"/articles/{slug}/comments/{comment['id']}", headers=writer.headers), 404)


REQUIRES_AUTH = [
    ("POST", "/articles/{slug}/comments", {"comment": {"body": "refused"}}),
    ("DELETE", "/articles/{slug}/comments/{comment_id}", None),
]


@pytest.mark.parametrize(("method", "path", "json"), REQUIRES_AUTH, ids=["POST", "DELETE"])
def test_add_and_delete_require_a_valid_token(
    api: httpx.Client, target: Target, bad_auth: dict[str, str], method: str, path: str, json: Any
) -> None:
    assert_unauthorized(api.request(method, target.path(path), json=json, headers=bad_auth))
    assert [c["id"] for c in list_comments(api, target.slug)] == [target.comment_id]


def test_list_with_an_invalid_token_is_401(api: httpx.Client, target: Target, invalid_token: dict[str, str]) -> None:
    assert_unauthorized(api.get(target.path("/articles/{slug}/comments"), headers=invalid_token))
