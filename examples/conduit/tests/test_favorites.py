"""Favorites: POST and DELETE /articles/{slug}/favorite.

Both answer the article as the viewer sees it (``favorited``, ``favoritesCount``); each is
idempotent per user; the counts add up over several users; an unknown article is a 404.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import (
    Account,
    Target,
    assert_unauthorized,
    check_article,
    create_article,
    error_messages,
    get_article,
    list_articles,
    unique,
)


def favorite_request(api: httpx.Client, method: str, account: Account, slug: str) -> dict[str, Any]:
    response = api.request(method, f"/articles/{slug}/favorite", headers=account.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"article"}, body
    check_article(body["article"])
    return body["article"]


def counts(article: dict[str, Any]) -> tuple[bool, int]:
    return article["favorited"], article["favoritesCount"]


def test_favorite(api: httpx.Client, writer: Account, reader: Account) -> None:
    article = create_article(api, writer)
    favorited = favorite_request(api, "POST", reader, article["slug"])
    assert counts(favorited) == (True, 1)
    for field in ("slug", "title", "description", "body", "tagList", "createdAt"):
        assert favorited[field] == article[field]
    assert favorited["author"]["username"] == writer.username
    assert counts(get_article(api, article["slug"], reader)) == (True, 1)


def test_favorite_twice_counts_once(api: httpx.Client, writer: Account, reader: Account) -> None:
    article = create_article(api, writer)
    favorite_request(api, "POST", reader, article["slug"])
    assert counts(favorite_request(api, "POST", reader, article["slug"])) == (True, 1)
    assert counts(get_article(api, article["slug"])) == (False, 1)


def test_unfavorite(api: httpx.Client, writer: Account, reader: Account) -> None:
    article = create_article(api, writer)
    favorite_request(api, "POST", reader, article["slug"])
    assert counts(favorite_request(api, "DELETE", reader, article["slug"])) == (False, 0)
    assert counts(get_article(api, article["slug"], reader)) == (False, 0)


def test_unfavorite_twice_is_fine(api: httpx.Client, writer: Account, reader: Account) -> None:
    article = create_article(api, writer)
    favorite_request(api, "POST", reader, article["slug"])
    favorite_request(api, "DELETE", reader, article["slug"])
    assert counts(favorite_request(api, "DELETE", reader, article["slug"])) == (False, 0)


def test_unfavorite_never_favorited_is_fine(api: httpx.Client, writer: Account, reader: Account) -> None:
    article = create_article(api, writer)
    assert counts(favorite_request(api, "DELETE", reader, article["slug"])) == (False, 0)


def test_favorite_own_article(api: httpx.Client, writer: Account) -> None:
    article = create_article(api, writer)
    assert counts(favorite_request(api, "POST", writer, article["slug"])) == (True, 1)


def test_counts_add_up_over_users(api: httpx.Client, writer: Account, reader: Account, stranger: Account) -> None:
    tag = unique("liked")
    slug = create_article(api, writer, tagList=[tag])["slug"]
    assert counts(favorite_request(api, "POST", reader, slug)) == (True, 1)
    assert counts(favorite_request(api, "POST", stranger, slug)) == (True, 2)
    assert counts(favorite_request(api, "POST", writer, slug)) == (True, 3)
    assert counts(favorite_request(api, "POST", stranger, slug)) == (True, 3)
    assert counts(get_article(api, slug)) == (False, 3)
    assert counts(get_article(api, slug, stranger)) == (True, 3)
    assert counts(favorite_request(api, "DELETE", reader, slug)) == (False, 2)
    assert counts(favorite_request(api, "DELETE", writer, slug)) == (False, 1)
    assert counts(get_article(api, slug, stranger)) == (True, 1)
    assert counts(get_article(api, slug, reader)) == (False, 1)
    assert counts(get_article(api, slug, writer)) == (False, 1)
    assert [counts(a) for a in list_articles(api, stranger.headers, tag=tag)["articles"]] == [(True, 1)]
    assert [counts(a) for a in list_articles(api, reader.headers, tag=tag)["articles"]] == [(False, 1)]


def test_favorites_of_one_article_do_not_count_for_another(api: httpx.Client, writer: Account, reader: Account) -> None:
    one, other = create_article(api, writer), create_article(api, writer)
    favorite_request(api, "POST", reader, one["slug"])
    assert counts(get_article(api, other["slug"], reader)) == (False, 0)


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_favorite_unknown_article_is_404(api: httpx.Client, writer: Account, method: str) -> None:
    response = api.request(method, f"/articles/{unique('no-such-article-')}/favorite", headers=writer.headers)
    error_messages(response, 404)


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_favorite_and_unfavorite_require_a_valid_token(
    api: httpx.Client, target: Target, bad_auth: dict[str, str], method: str
) -> None:
    assert_unauthorized(api.request(method, target.path("/articles/{slug}/favorite"), headers=bad_auth))
    assert counts(get_article(api, target.slug)) == (False, 0)
