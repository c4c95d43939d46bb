"""Profiles: GET /profiles/{username}, following and unfollowing (POST and DELETE .../follow).

``following`` is as the viewer sees it: false without a token; follow and unfollow are idempotent;
following yourself is refused; an unknown user is a 404; an invalid token a 401, even where a
token is optional.
"""

from __future__ import annotations

import httpx
import pytest
from conftest import Account, Target, assert_unauthorized, check_profile, error_messages, follow, unique


def get_profile(api: httpx.Client, username: str, viewer: Account | None = None) -> dict[str, object]:
    response = api.get(f"/profiles/{username}", headers=viewer.headers if viewer else None)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"profile"}, body
    check_profile(body["profile"])
    return body["profile"]


def test_profile_without_token(api: httpx.Client, stranger: Account) -> None:
    profile = get_profile(api, stranger.username)
    assert profile == {"username": stranger.username, "bio": None, "image": None, "following": False}


def test_profile_shows_bio_and_image(api: httpx.Client, alice: Account) -> None:
    fields = {"bio": "Alice's bio", "image": "https://example.com/alice.jpg"}
    assert api.put("/user", json={"user": fields}, headers=alice.headers).status_code == 200
    profile = get_profile(api, alice.username)
    assert (profile["bio"], profile["image"]) == (fields["bio"], fields["image"])


def test_profile_of_an_unknown_user_is_404(api: httpx.Client) -> None:
    error_messages(api.get(f"/profiles/{unique('nobody')}"), 404)


def test_profile_of_yourself_is_not_followed(api: httpx.Client, stranger: Account) -> None:
    assert get_profile(api, stranger.username, stranger)["following"] is False


def test_follow(api: httpx.Client, alice: Account, reader: Account) -> None:
    response = api.post(f"/profiles/{reader.username}/follow", headers=alice.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"profile"}
    check_profile(body["profile"], reader.username, following=True)
    assert body["profile"]["bio"] is None


def test_following_is_as_the_viewer_sees_it(api: httpx.Client, alice: Account, reader: Account) -> None:
    follow(api, alice, reader)
    assert get_profile(api, reader.username, alice)["following"] is True
    assert get_profile(api, reader.username)["following"] is False
    assert get_profile(api, alice.username, reader)["following"] is False  # not mutual


def test_follow_is_one_way_per_viewer(api: httpx.Client, alice: Account, reader: Account, stranger: Account) -> None:
    follow(api, alice, reader)
    assert get_profile(api, reader.username, stranger)["following"] is False


def test_follow_twice_is_fine(api: httpx.Client, alice: Account, reader: Account) -> None:
    for _ in range(2):
        response = api.post(f"/profiles/{reader.username}/follow", headers=alice.headers)
        assert response.status_code == 200, response.text
        assert response.json()["profile"]["following"] is True
    assert get_profile(api, reader.username, alice)["following"] is True


def test_unfollow(api: httpx.Client, alice: Account, reader: Account) -> None:
    follow(api, alice, reader)
    response = api.delete(f"/profiles/{reader.username}/follow", headers=alice.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"profile"}
    check_profile(body["profile"], reader.username, following=False)
    assert get_profile(api, reader.username, alice)["following"] is False


def test_unfollow_twice_is_fine(api: httpx.Client, alice: Account, reader: Account) -> None:
    follow(api, alice, reader)
    for _ in range(2):
        response = api.delete(f"/profiles/{reader.username}/follow", headers=alice.headers)
        assert response.status_code == 200, response.text
        assert response.json()["profile"]["following"] is False


def test_unfollow_someone_not_followed_is_fine(api: httpx.Client, alice: Account, reader: Account) -> None:
    response = api.delete(f"/profiles/{reader.username}/follow", headers=alice.headers)
    assert response.status_code == 200, response.text
    check_profile(response.json()["profile"], reader.username, following=False)


def test_follow_again_after_unfollow(api: httpx.Client, alice: Account, reader: Account) -> None:
    follow(api, alice, reader)
    assert api.delete(f"/profiles/{reader.username}/follow", headers=alice.headers).status_code == 200
    follow(api, alice, reader)
    assert get_profile(api, reader.username, alice)["following"] is True


def test_follow_yourself_is_refused(api: httpx.Client, target: Target) -> None:
    error_messages(api.post(f"/profiles/{target.account.username}/follow", headers=target.account.headers), 422)
    assert get_profile(api, target.account.username, target.account)["following"] is False


def test_follow_an_unknown_user_is_404(api: httpx.Client, writer: Account) -> None:
    error_messages(api.post(f"/profiles/{unique('nobody')}/follow", headers=writer.headers), 404)


def test_unfollow_an_unknown_user_is_404(api: httpx.Client, writer: Account) -> None:
    error_messages(api.delete(f"/profiles/{unique('nobody')}/follow", headers=writer.headers), 404)


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_follow_and_unfollow_require_a_valid_token(
    api: httpx.Client, target: Target, bad_auth: dict[str, str], method: str
) -> None:
    assert_unauthorized(api.request(method, target.path("/profiles/{username}/follow"), headers=bad_auth))


def test_profile_with_an_invalid_token_is_401(api: httpx.Client, target: Target, invalid_token: dict[str, str]) -> None:
    assert_unauthorized(api.get(target.path("/profiles/{username}"), headers=invalid_token))
