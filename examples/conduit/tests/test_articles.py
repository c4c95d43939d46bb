"""Articles: create, read, update, delete; the list with its filters and pages; the feed.

POST /articles, GET/PUT/DELETE /articles/{slug}, GET /articles (tag, author, favorited, limit,
offset) and GET /articles/feed. Slugs come from titles (a taken one gets a 6-hex suffix), tag
lists are deduplicated and sorted, timestamps are UTC with milliseconds. Counting never assumes an
empty database: the lists are filtered by an author or a tag of the test's own.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from conftest import (
    Account,
    Target,
    assert_unauthorized,
    check_article,
    check_profile,
    check_timestamp,
    create_article,
    error_messages,
    favorite,
    follow,
    get_article,
    list_articles,
    register,
    unique,
)


def update_article(api: httpx.Client, account: Account, slug: str, **fields: Any) -> httpx.Response:
    return api.put(f"/articles/{slug}", json={"article": fields}, headers=account.headers)


def feed(api: httpx.Client, account: Account, **params: Any) -> dict[str, Any]:
    return list_articles(api, account.headers, path="/articles/feed", **params)


def slugs(body: dict[str, Any]) -> list[str]:
    return [article["slug"] for article in body["articles"]]


# --- Creating -------------------------------------------------------------------------------------


def test_create_answers_the_article(api: httpx.Client, writer: Account) -> None:
    title = unique("My Title ")
    fields = {"title": title, "description": "About it", "body": "The body", "tagList": ["x" + title[-10:]]}
    response = api.post("/articles", json={"article": fields}, headers=writer.headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"article"}
    article = body["article"]
    check_article(article)
    assert article["slug"] == title.lower().replace(" ", "-")
    assert (article["title"], article["description"], article["body"]) == (title, "About it", "The body")
    assert article["tagList"] == fields["tagList"]
    assert article["createdAt"] == article["updatedAt"]
    assert (article["favorited"], article["favoritesCount"]) == (False, 0)
    check_profile(article["author"], writer.username, following=False)
    assert (article["author"]["bio"], article["author"]["image"]) == (None, None)


def test_create_timestamps_are_now_in_utc(api: httpx.Client, writer: Account) -> None:
    before = datetime.now(UTC)
    article = create_article(api, writer)
    created = check_timestamp(article["createdAt"])
    assert before - timedelta(seconds=5) <= created <= datetime.now(UTC) + timedelta(seconds=5)


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("How to Train Your Dragon! {u}", "how-to-train-your-dragon-{u}"),
        ("!!Hello,   World {u}?!", "hello-world-{u}"),
        ("snake_case {u} stays", "snake_case-{u}-stays"),
        ("Version 2.0 -- {u}", "version-2-0-{u}"),
        ("UPPER {u} lower", "upper-{u}-lower"),
        ("--{u}--", "{u}"),
    ],
    ids=["punctuation", "leading-and-trailing", "underscore", "dots-and-dashes", "case", "dashes"],
)
def test_create_slug_from_title(api: httpx.Client, writer: Account, title: str, slug: str) -> None:
    u = unique("")
    article = create_article(api, writer, title=title.format(u=u))
    assert article["slug"] == slug.format(u=u)
    assert get_article(api, article["slug"])["title"] == title.format(u=u)


def test_create_slug_of_the_example_title(api: httpx.Client, writer: Account) -> None:
    article = create_article(api, writer, title="How to Train Your Dragon!")
    assert re.fullmatch(r"how-to-train-your-dragon(-[0-9a-f]{6})?", article["slug"]), article["slug"]


def test_create_taken_slug_gets_a_suffix(api: httpx.Client, writer: Account, reader: Account) -> None:
    title = unique("Same Title ")
    first = create_article(api, writer, title=title)
    second = create_article(api, reader, title=title)
    third = create_article(api, writer, title=title.upper())
    assert first["slug"] == title.lower().replace(" ", "-")
    for other in (second, third):
        assert re.fullmatch(re.escape(first["slug"]) + r"-[0-9a-f]{6}", other["slug"]), other["slug"]
    assert len({first["slug"], second["slug"], third["slug"]}) == 3
    assert get_article(api, second["slug"])["author"]["username"] == reader.username
    assert get_article(api, first["slug"])["author"]["username"] == writer.username


def test_create_tag_list_deduplicated_and_sorted(api: httpx.Client, writer: Account) -> None:
    u = unique("")
    article = create_article(api, writer, tagList=[f"zeta{u}", f"alpha{u}", f"zeta{u}", f"mid{u}"])
    assert article["tagList"] == [f"alpha{u}", f"mid{u}", f"zeta{u}"]
    assert get_article(api, article["slug"])["tagList"] == [f"alpha{u}", f"mid{u}", f"zeta{u}"]


def test_create_without_tag_list(api: httpx.Client, writer: Account) -> None:
    article = create_article(api, writer)
    assert article["tagList"] == []


def test_create_with_an_empty_tag_list(api: httpx.Client, writer: Account) -> None:
    assert create_article(api, writer, tagList=[])["tagList"] == []


INVALID_ARTICLES: dict[str, dict[str, Any]] = {
    "no-title": {"title": None},
    "no-description": {"description": None},
    "no-body": {"body": None},
    "empty-title": {"title": ""},
    "empty-description": {"description": ""},
    "empty-body": {"body": ""},
    "title-not-a-string": {"title": 42},
    "tag-list-not-a-list": {"tagList": "tag"},
    "tag-not-a-string": {"tagList": [1, 2]},
}


@pytest.mark.parametrize("case", INVALID_ARTICLES)
def test_create_refuses_invalid_fields(api: httpx.Client, writer: Account, case: str) -> None:
    fields = {"title": unique("Title "), "description": "d", "body": "b", **INVALID_ARTICLES[case]}
    fields = {name: value for name, value in fields.items() if value is not None}
    before = list_articles(api, author=writer.username, limit=1)["articlesCount"]
    error_messages(api.post("/articles", json={"article": fields}, headers=writer.headers), 422)
    assert list_articles(api, author=writer.username, limit=1)["articlesCount"] == before


def test_create_refuses_a_body_without_article(api: httpx.Client, writer: Account) -> None:
    fields = {"title": unique("Title "), "description": "d", "body": "b"}
    error_messages(api.post("/articles", json=fields, headers=writer.headers), 422)


# --- Reading one ----------------------------------------------------------------------------------


def test_get_article(api: httpx.Client, writer: Account) -> None:
    created = create_article(api, writer, tagList=[unique("t")])
    assert get_article(api, created["slug"]) == created


def test_get_unknown_article_is_404(api: httpx.Client) -> None:
    error_messages(api.get(f"/articles/{unique('no-such-article-')}"), 404)


def test_get_article_as_the_viewer_sees_it(api: httpx.Client, writer: Account, bob: Account) -> None:
    article = create_article(api, writer)
    follow(api, bob, writer)
    favorite(api, bob, article["slug"])
    as_bob = get_article(api, article["slug"], bob)
    assert (as_bob["favorited"], as_bob["favoritesCount"], as_bob["author"]["following"]) == (True, 1, True)
    anonymous = get_article(api, article["slug"])
    assert (anonymous["favorited"], anonymous["favoritesCount"], anonymous["author"]["following"]) == (False, 1, False)
    as_writer = get_article(api, article["slug"], writer)
    assert (as_writer["favorited"], as_writer["favoritesCount"], as_writer["author"]["following"]) == (False, 1, False)


# --- Updating -------------------------------------------------------------------------------------


def test_update_title_changes_the_slug(api: httpx.Client, writer: Account) -> None:
    article = create_article(api, writer)
    new_title = unique("New Title ")
    time.sleep(0.02)  # updatedAt has millisecond resolution
    response = update_article(api, writer, article["slug"], title=new_title)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"article"}
    updated = body["article"]
    check_article(updated)
    assert updated["title"] == new_title
    assert updated["slug"] == new_title.lower().replace(" ", "-")
    assert (updated["description"], updated["body"]) == (article["description"], article["body"])
    assert updated["createdAt"] == article["createdAt"]
    assert check_timestamp(updated["updatedAt"]) > check_timestamp(article["updatedAt"])
    error_messages(api.get(f"/articles/{article['slug']}"), 404)
    assert get_article(api, updated["slug"]) == updated


def test_update_description_and_body_keeps_the_slug(api: httpx.Client, writer: Account) -> None:
    article = create_article(api, writer)
    time.sleep(0.02)
    response = update_article(api, writer, article["slug"], description="new description", body="new body")
    assert response.status_code == 200, response.text
    updated = response.json()["article"]
    assert (updated["slug"], updated["title"]) == (article["slug"], article["title"])
    assert (updated["description"], updated["body"]) == ("new description", "new body")
    assert updated["createdAt"] == article["createdAt"]
    assert check_timestamp(updated["updatedAt"]) > check_timestamp(article["updatedAt"])
    assert get_article(api, article["slug"])["body"] == "new body"


def test_update_with_the_same_title_keeps_the_slug(api: httpx.Client, writer: Account) -> None:
    article = create_article(api, writer)
    response = update_article(api, writer, article["slug"], title=article["title"])
    assert response.status_code == 200, response.text
    assert response.json()["article"]["slug"] == article["slug"]


def test_update_to_a_taken_title_gets_a_suffix(api: httpx.Client, writer: Account, reader: Account) -> None:
    taken = create_article(api, reader)
    article = create_article(api, writer)
    response = update_article(api, writer, article["slug"], title=taken["title"])
    assert response.status_code == 200, response.text
    slug = response.json()["article"]["slug"]
    assert re.fullmatch(re.escape(taken["slug"]) + r"-[0-9a-f]{6}", slug), slug
    assert get_article(api, taken["slug"])["author"]["username"] == reader.username


def test_update_tag_list(api: httpx.Client, writer: Account) -> None:
    u = unique("")
    article = create_article(api, writer, tagList=[f"old{u}"])
    response = update_article(api, writer, article["slug"], tagList=[f"new{u}", f"another{u}", f"new{u}"])
    assert response.status_code == 200, response.text
    assert response.json()["article"]["tagList"] == [f"another{u}", f"new{u}"]
    assert get_article(api, article["slug"])["tagList"] == [f"another{u}", f"new{u}"]
    assert list_articles(api, tag=f"old{u}")["articlesCount"] == 0
    assert slugs(list_articles(api, tag=f"new{u}")) == [article["slug"]]


def test_update_without_tag_list_keeps_the_tags(api: httpx.Client, writer: Account) -> None:
    tag = unique("keep")
    article = create_article(api, writer, tagList=[tag])
    response = update_article(api, writer, article["slug"], body="other body")
    assert response.status_code == 200, response.text
    assert response.json()["article"]["tagList"] == [tag]


@pytest.mark.parametrize(
    "fields",
    [{"title": ""}, {"description": ""}, {"body": ""}, {"title": 5}, {"tagList": "tag"}],
    ids=["empty-title", "empty-description", "empty-body", "title-not-a-string", "tag-list-not-a-list"],
)
def test_update_refuses_invalid_fields(api: httpx.Client, writer: Account, fields: dict[str, Any]) -> None:
    article = create_article(api, writer)
    error_messages(update_article(api, writer, article["slug"], **fields), 422)
    assert get_article(api, article["slug"]) == article


def test_update_by_another_user_is_403(api: httpx.Client, writer: Account, reader: Account) -> None:
    article = create_article(api, writer)
    error_messages(update_article(api, reader, article["slug"], body="reader was here"), 403)
    assert get_article(api, article["slug"])["body"] == article["body"]


def test_update_unknown_article_is_404(api: httpx.Client, writer: Account) -> None:
    error_messages(update_article(api, writer, unique("no-such-article-"), body="x"), 404)


# --- Deleting -------------------------------------------------------------------------------------


def test_delete_article(api: httpx.Client, writer: Account) -> None:
    tag = unique("deleted")
    article = create_article(api, writer, tagList=[tag])
    response = api.delete(f"/articles/{article['slug']}", headers=writer.headers)
    assert response.status_code == 200, response.text
    assert response.content == b""
    error_messages(api.get(f"/articles/{article['slug']}"), 404)
    error_messages(api.get(f"/articles/{article['slug']}/comments"), 404)
    assert list_articles(api, tag=tag) == {"articles": [], "articlesCount": 0}


def test_delete_article_with_comments_and_favorites(api: httpx.Client, writer: Account, bob: Account) -> None:
    tag = unique("gone")
    article = create_article(api, writer, tagList=[tag])
    favorite(api, bob, article["slug"])
    comment = api.post(f"/articles/{article['slug']}/comments", json={"comment": {"body": "hi"}}, headers=bob.headers)
    assert comment.status_code == 200, comment.text
    response = api.delete(f"/articles/{article['slug']}", headers=writer.headers)
    assert response.status_code == 200, response.text
    error_messages(api.get(f"/articles/{article['slug']}"), 404)
    assert list_articles(api, favorited=bob.username)["articlesCount"] == 0
    assert list_articles(api, tag=tag)["articlesCount"] == 0


def test_delete_by_another_user_is_403(api: httpx.Client, writer: Account, reader: Account) -> None:
    article = create_article(api, writer)
    error_messages(api.delete(f"/articles/{article['slug']}", headers=reader.headers), 403)
    assert get_article(api, article["slug"]) == article


def test_delete_unknown_article_is_404(api: httpx.Client, writer: Account) -> None:
    error_messages(api.delete(f"/articles/{unique('no-such-article-')}", headers=writer.headers), 404)


def test_delete_twice_is_404(api: httpx.Client, writer: Account) -> None:
    article = create_article(api, writer)
    assert api.delete(f"/articles/{article['slug']}", headers=writer.headers).status_code == 200
    error_messages(api.delete(f"/articles/{article['slug']}", headers=writer.headers), 404)


def test_title_of_a_deleted_article_can_be_reused(api: httpx.Client, writer: Account) -> None:
    article = create_article(api, writer)
    assert api.delete(f"/articles/{article['slug']}", headers=writer.headers).status_code == 200
    again = create_article(api, writer, title=article["title"])
    assert again["slug"] == article["slug"]


# --- The list: filters ----------------------------------------------------------------------------


def test_list_by_author_newest_first(api: httpx.Client, alice: Account, reader: Account) -> None:
    first = create_article(api, alice)
    create_article(api, reader)
    second = create_article(api, alice)
    third = create_article(api, alice)
    body = list_articles(api, author=alice.username)
    assert slugs(body) == [third["slug"], second["slug"], first["slug"]]
    assert body["articlesCount"] == 3
    assert body["articles"][0] == third


def test_list_is_newest_first_overall(api: httpx.Client, writer: Account) -> None:
    create_article(api, writer)
    newest = create_article(api, writer)
    body = list_articles(api, limit=1)
    assert body["articles"][0]["slug"] == newest["slug"]
    assert body["articlesCount"] >= 2
    dates = [a["createdAt"] for a in list_articles(api, limit=100)["articles"]]
    assert dates == sorted(dates, reverse=True)


def test_list_by_tag(api: httpx.Client, writer: Account, reader: Account) -> None:
    tag, other = unique("tag"), unique("tag")
    a1 = create_article(api, writer, tagList=[tag])
    create_article(api, writer, tagList=[other])
    b1 = create_article(api, reader, tagList=[other, tag])
    body = list_articles(api, tag=tag)
    assert slugs(body) == [b1["slug"], a1["slug"]]
    assert body["articlesCount"] == 2
    assert body["articles"][0]["tagList"] == sorted([other, tag])


def test_list_by_favorited(api: httpx.Client, writer: Account, bob: Account) -> None:
    a1 = create_article(api, writer)
    a2 = create_article(api, writer)
    create_article(api, writer)
    favorite(api, bob, a1["slug"])
    favorite(api, bob, a2["slug"])
    body = list_articles(api, favorited=bob.username)
    assert slugs(body) == [a2["slug"], a1["slug"]]
    assert body["articlesCount"] == 2
    assert all(article["favoritesCount"] == 1 for article in body["articles"])
    assert all(article["favorited"] is False for article in body["articles"])  # anonymous viewer


def test_list_filters_combine(api: httpx.Client, writer: Account, reader: Account, bob: Account) -> None:
    tag = unique("combo")
    a_tagged = create_article(api, writer, tagList=[tag])
    create_article(api, writer)
    b_tagged = create_article(api, reader, tagList=[tag])
    b_plain = create_article(api, reader)
    for article in (a_tagged, b_tagged, b_plain):
        favorite(api, bob, article["slug"])
    assert slugs(list_articles(api, tag=tag, author=writer.username)) == [a_tagged["slug"]]
    assert slugs(list_articles(api, tag=tag, favorited=bob.username)) == [b_tagged["slug"], a_tagged["slug"]]
    assert slugs(list_articles(api, author=reader.username, favorited=bob.username)) == [
        b_plain["slug"],
        b_tagged["slug"],
    ]
    body = list_articles(api, tag=tag, author=reader.username, favorited=bob.username)
    assert (slugs(body), body["articlesCount"]) == ([b_tagged["slug"]], 1)
    assert list_articles(api, tag=tag, author=reader.username, favorited=writer.username)["articlesCount"] == 0


@pytest.mark.parametrize("param", ["author", "tag", "favorited"])
def test_list_by_unknown_name_is_empty(api: httpx.Client, param: str) -> None:
    body = list_articles(api, **{param: unique("nobody")})
    assert body == {"articles": [], "articlesCount": 0}


def test_list_by_author_without_articles_is_empty(api: httpx.Client, alice: Account) -> None:
    assert list_articles(api, author=alice.username) == {"articles": [], "articlesCount": 0}


def test_list_as_the_viewer_sees_it(api: httpx.Client, writer: Account, bob: Account) -> None:
    tag = unique("seen")
    liked = create_article(api, writer, tagList=[tag])
    other = create_article(api, writer, tagList=[tag])
    follow(api, bob, writer)
    favorite(api, bob, liked["slug"])
    as_bob = {a["slug"]: a for a in list_articles(api, bob.headers, tag=tag)["articles"]}
    assert as_bob[liked["slug"]]["favorited"] is True
    assert as_bob[other["slug"]]["favorited"] is False
    assert all(a["author"]["following"] is True for a in as_bob.values())
    anonymous = list_articles(api, tag=tag)["articles"]
    assert all(a["favorited"] is False and a["author"]["following"] is False for a in anonymous)
    assert {a["slug"]: a["favoritesCount"] for a in anonymous} == {liked["slug"]: 1, other["slug"]: 0}


# --- The list: pages ------------------------------------------------------------------------------


def test_list_limit_and_offset(api: httpx.Client, writer: Account) -> None:
    tag = unique("page")
    made = [create_article(api, writer, tagList=[tag])["slug"] for _ in range(5)]
    newest_first = made[::-1]
    page = list_articles(api, tag=tag, limit=2)
    assert (slugs(page), page["articlesCount"]) == (newest_first[:2], 5)
    page = list_articles(api, tag=tag, limit=2, offset=2)
    assert (slugs(page), page["articlesCount"]) == (newest_first[2:4], 5)
    page = list_articles(api, tag=tag, limit=2, offset=4)
    assert (slugs(page), page["articlesCount"]) == (newest_first[4:], 5)
    page = list_articles(api, tag=tag, offset=3)
    assert (slugs(page), page["articlesCount"]) == (newest_first[3:], 5)
    page = list_articles(api, tag=tag, offset=10)
    assert page == {"articles": [], "articlesCount": 5}


def test_list_default_limit_is_20(api: httpx.Client, writer: Account) -> None:
    tag = unique("many")
    made = [create_article(api, writer, tagList=[tag])["slug"] for _ in range(21)]
    page = list_articles(api, tag=tag)
    assert (slugs(page), page["articlesCount"]) == (made[::-1][:20], 21)
    page = list_articles(api, tag=tag, limit=100)
    assert len(page["articles"]) == 21


@pytest.mark.parametrize("limit", [1, 100])
def test_list_limit_bounds_are_accepted(api: httpx.Client, writer: Account, limit: int) -> None:
    tag = unique("bounds")
    create_article(api, writer, tagList=[tag])
    create_article(api, writer, tagList=[tag])
    page = list_articles(api, tag=tag, limit=limit)
    assert (len(page["articles"]), page["articlesCount"]) == (min(limit, 2), 2)


INVALID_PAGES: dict[str, dict[str, Any]] = {
    "limit-0": {"limit": 0},
    "limit-101": {"limit": 101},
    "limit-negative": {"limit": -1},
    "offset-negative": {"offset": -1},
    "limit-not-a-number": {"limit": "ten"},
    "offset-not-a-number": {"offset": "zero"},
}


@pytest.mark.parametrize("case", INVALID_PAGES)
def test_list_refuses_invalid_pages(api: httpx.Client, case: str) -> None:
    error_messages(api.get("/articles", params=INVALID_PAGES[case]), 422)


# --- The feed -------------------------------------------------------------------------------------


def test_feed_has_the_articles_of_followed_authors(
    api: httpx.Client, alice: Account, bob: Account, writer: Account
) -> None:
    carol = register(api, "carol")
    follow(api, alice, bob)
    follow(api, alice, carol)
    b1 = create_article(api, bob)
    create_article(api, writer)  # not followed
    c1 = create_article(api, carol)
    create_article(api, alice)  # her own: not in her feed
    b2 = create_article(api, bob)
    body = feed(api, alice)
    assert slugs(body) == [b2["slug"], c1["slug"], b1["slug"]]
    assert body["articlesCount"] == 3
    assert all(article["author"]["following"] is True for article in body["articles"])
    assert all(article["favorited"] is False for article in body["articles"])


def test_feed_shows_favorites_of_the_viewer(api: httpx.Client, alice: Account, bob: Account) -> None:
    follow(api, alice, bob)
    article = create_article(api, bob)
    favorite(api, alice, article["slug"])
    (item,) = feed(api, alice)["articles"]
    assert (item["slug"], item["favorited"], item["favoritesCount"]) == (article["slug"], True, 1)


def test_feed_is_empty_when_following_nobody(api: httpx.Client, alice: Account, writer: Account) -> None:
    create_article(api, writer)
    assert feed(api, alice) == {"articles": [], "articlesCount": 0}


def test_feed_drops_unfollowed_authors(api: httpx.Client, alice: Account, bob: Account) -> None:
    follow(api, alice, bob)
    create_article(api, bob)
    assert feed(api, alice)["articlesCount"] == 1
    assert api.delete(f"/profiles/{bob.username}/follow", headers=alice.headers).status_code == 200
    assert feed(api, alice) == {"articles": [], "articlesCount": 0}


def test_feed_limit_and_offset(api: httpx.Client, alice: Account, bob: Account) -> None:
    follow(api, alice, bob)
    made = [create_article(api, bob)["slug"] for _ in range(4)]
    newest_first = made[::-1]
    page = feed(api, alice, limit=3)
    assert (slugs(page), page["articlesCount"]) == (newest_first[:3], 4)
    page = feed(api, alice, limit=3, offset=3)
    assert (slugs(page), page["articlesCount"]) == (newest_first[3:], 4)
    page = feed(api, alice, offset=1)
    assert (slugs(page), page["articlesCount"]) == (newest_first[1:], 4)
    assert feed(api, alice, offset=4) == {"articles": [], "articlesCount": 4}


@pytest.mark.parametrize("case", INVALID_PAGES)
def test_feed_refuses_invalid_pages(api: httpx.Client, writer: Account, case: str) -> None:
    error_messages(api.get("/articles/feed", params=INVALID_PAGES[case], headers=writer.headers), 422)


# --- Tokens ---------------------------------------------------------------------------------------


REQUIRES_AUTH = [
    ("GET", "/articles/feed", None),
    ("POST", "/articles", {"article": {"title": "Refused", "description": "d", "body": "b"}}),
    ("PUT", "/articles/{slug}", {"article": {"body": "refused"}}),
    ("DELETE", "/articles/{slug}", None),
]


@pytest.mark.parametrize(("method", "path", "json"), REQUIRES_AUTH, ids=[f"{m} {p}" for m, p, _ in REQUIRES_AUTH])
def test_article_writes_and_feed_require_a_valid_token(
    api: httpx.Client, target: Target, bad_auth: dict[str, str], method: str, path: str, json: Any
) -> None:
    assert_unauthorized(api.request(method, target.path(path), json=json, headers=bad_auth))
    assert api.get(target.path("/articles/{slug}")).json()["article"]["body"] == "A body"


@pytest.mark.parametrize("path", ["/articles", "/articles/{slug}"])
def test_article_reads_with_an_invalid_token_are_401(
    api: httpx.Client, target: Target, invalid_token: dict[str, str], path: str
) -> None:
    assert_unauthorized(api.get(target.path(path), headers=invalid_token))
