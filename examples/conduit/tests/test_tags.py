"""Tags: GET /tags, the distinct names of the tags articles use.

A tag appears once however many articles use it, and disappears when no article uses it any
more (its last article deleted, or its tag list changed). No token is needed.
"""

from __future__ import annotations

import httpx
from conftest import Account, create_article, unique


def get_tags(api: httpx.Client) -> list[str]:
    response = api.get("/tags")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"tags"}, body
    assert isinstance(body["tags"], list), body
    assert all(isinstance(tag, str) for tag in body["tags"]), body
    return body["tags"]


def test_tags_of_new_articles_are_listed(api: httpx.Client, writer: Account) -> None:
    one, two = unique("tag"), unique("tag")
    create_article(api, writer, tagList=[one, two])
    tags = get_tags(api)
    assert one in tags
    assert two in tags


def test_tags_are_distinct(api: httpx.Client, writer: Account, reader: Account) -> None:
    shared = unique("shared")
    create_article(api, writer, tagList=[shared])
    create_article(api, reader, tagList=[shared])
    create_article(api, reader, tagList=[shared, unique("other")])
    tags = get_tags(api)
    assert tags.count(shared) == 1
    assert len(tags) == len(set(tags))


def test_unused_tag_is_not_listed(api: httpx.Client) -> None:
    assert unique("never") not in get_tags(api)


def test_tag_of_a_deleted_article_disappears(api: httpx.Client, writer: Account) -> None:
    tag = unique("doomed")
    article = create_article(api, writer, tagList=[tag])
    assert tag in get_tags(api)
    assert api.delete(f"/articles/{article['slug']}", headers=writer.headers).status_code == 200
    assert tag not in get_tags(api)


def test_tag_stays_while_another_article_uses_it(api: httpx.Client, writer: Account) -> None:
    tag = unique("kept")
    first = create_article(api, writer, tagList=[tag])
    create_article(api, writer, tagList=[tag])
    assert api.delete(f"/articles/{first['slug']}", headers=writer.headers).status_code == 200
    assert tag in get_tags(api)


def test_tag_removed_from_its_article_disappears(api: httpx.Client, writer: Account) -> None:
    old, new = unique("old"), unique("new")
    article = create_article(api, writer, tagList=[old])
    response = api.put(f"/articles/{article['slug']}", json={"article": {"tagList": [new]}}, headers=writer.headers)
    assert response.status_code == 200, response.text
    tags = get_tags(api)
    assert old not in tags
    assert new in tags
