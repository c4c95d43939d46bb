"""Users and authentication: registration, login, the current user and its update, and the tokens.

POST /users, POST /users/login, GET /user and PUT /user; what a token must be (HS256 with the
server's key, ``sub`` the user id, ``exp``) and the 401 for every kind of missing or bad token.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
from conftest import (
    SECRET_KEY,
    Account,
    Target,
    assert_unauthorized,
    check_user,
    error_messages,
    register,
    unique,
    user_id,
)


def new_user(**fields: Any) -> dict[str, Any]:
    """Registration fields of a user nobody has, overridden by ``fields``."""
    username = unique("user")
    return {"username": username, "email": f"{username}@example.com", "password": "password-1234", **fields}


def login(api: httpx.Client, email: str, password: str) -> httpx.Response:
    return api.post("/users/login", json={"user": {"email": email, "password": password}})


def update(api: httpx.Client, account: Account, **fields: Any) -> httpx.Response:
    """PUT /user with ``fields``, as ``account``."""
    return api.put("/user", json={"user": fields}, headers=account.headers)


# --- Registration ---------------------------------------------------------------------------------


def test_register_answers_the_user_with_a_token(api: httpx.Client) -> None:
    fields = new_user()
    response = api.post("/users", json={"user": fields})
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"user"}
    user = body["user"]
    check_user(user)
    assert user["username"] == fields["username"]
    assert user["email"] == fields["email"]
    assert user["bio"] is None
    assert user["image"] is None
    assert "password" not in response.text


def test_register_token_is_hs256_with_sub_and_exp(api: httpx.Client) -> None:
    account = register(api)
    assert jwt.get_unverified_header(account.token)["alg"] == "HS256"
    claims = jwt.decode(account.token, SECRET_KEY, algorithms=["HS256"])
    assert isinstance(claims["sub"], str)
    assert claims["sub"]
    assert claims["exp"] > datetime.now(UTC).timestamp()


def test_register_token_authenticates(api: httpx.Client) -> None:
    account = register(api)
    response = api.get("/user", headers=account.headers)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["username"] == account.username


def test_register_stores_email_lower_cased(api: httpx.Client) -> None:
    name = unique("Ada")
    response = api.post("/users", json={"user": new_user(email=f"{name}@Example.COM")})
    assert response.status_code == 201, response.text
    assert response.json()["user"]["email"] == f"{name.lower()}@example.com"


def test_register_accepts_a_64_character_username(api: httpx.Client) -> None:
    username = unique("u") + "a" * 53
    assert len(username) == 64
    response = api.post("/users", json={"user": new_user(username=username)})
    assert response.status_code == 201, response.text
    assert response.json()["user"]["username"] == username


def test_register_accepts_an_8_character_password(api: httpx.Client) -> None:
    fields = new_user(password="12345678")
    assert api.post("/users", json={"user": fields}).status_code == 201
    assert login(api, fields["email"], "12345678").status_code == 200


def test_register_refuses_a_taken_username(api: httpx.Client, reader: Account) -> None:
    response = api.post("/users", json={"user": new_user(username=reader.username)})
    error_messages(response, 422)


def test_register_refuses_a_taken_email(api: httpx.Client, reader: Account) -> None:
    response = api.post("/users", json={"user": new_user(email=reader.email)})
    error_messages(response, 422)


def test_register_refuses_a_taken_email_in_another_case(api: httpx.Client, reader: Account) -> None:
    response = api.post("/users", json={"user": new_user(email=reader.email.upper())})
    error_messages(response, 422)


INVALID_REGISTRATIONS: dict[str, dict[str, Any]] = {
    "no-username": {"username": None},
    "no-email": {"email": None},
    "no-password": {"password": None},
    "username-not-a-string": {"username": 12345},
    "email-not-a-string": {"email": ["a@example.com"]},
    "password-not-a-string": {"password": 123456789},
    "bad-email": {"email": "not-an-email"},
    "email-without-domain": {"email": "someone@"},
    "short-password": {"password": "1234567"},
    "empty-username": {"username": ""},
    "username-65-chars": {"username": "u" * 65},
    "username-with-slash": {"username": "a/b"},
    "username-with-space": {"username": "a b"},
    "username-with-tab": {"username": "a\tb"},
}


@pytest.mark.parametrize("case", INVALID_REGISTRATIONS)
def test_register_refuses_invalid_fields(api: httpx.Client, case: str) -> None:
    fields = new_user(**INVALID_REGISTRATIONS[case])
    fields = {name: value for name, value in fields.items() if value is not None}
    response = api.post("/users", json={"user": fields})
    error_messages(response, 422)


def test_register_refuses_a_body_without_user(api: httpx.Client) -> None:
    error_messages(api.post("/users", json=new_user()), 422)


def test_register_refuses_a_body_that_is_not_json(api: httpx.Client) -> None:
    response = api.post("/users", content=b"{not json", headers={"Content-Type": "application/json"})
    error_messages(response, 422)


# --- Login ----------------------------------------------------------------------------------------


def test_login_answers_the_user_with_a_token(api: httpx.Client, reader: Account) -> None:
    response = login(api, reader.email, reader.password)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"user"}
    user = body["user"]
    check_user(user)
    assert (user["username"], user["email"], user["bio"], user["image"]) == (reader.username, reader.email, None, None)
    assert "password" not in response.text
    me = api.get("/user", headers={"Authorization": f"Token {user['token']}"})
    assert me.status_code == 200, me.text
    assert me.json()["user"]["username"] == reader.username


def test_login_email_is_case_insensitive(api: httpx.Client) -> None:
    name = unique("Ada")
    fields = new_user(email=f"{name}@Example.COM")
    assert api.post("/users", json={"user": fields}).status_code == 201
    for email in (f"{name}@Example.COM", f"{name.lower()}@example.com", f"{name.upper()}@EXAMPLE.COM"):
        response = login(api, email, fields["password"])
        assert response.status_code == 200, (email, response.text)
        assert response.json()["user"]["username"] == fields["username"]


def test_login_refuses_a_wrong_password(api: httpx.Client, reader: Account) -> None:
    error_messages(login(api, reader.email, reader.password + "x"), 401)


def test_login_refuses_an_unknown_email(api: httpx.Client) -> None:
    error_messages(login(api, f"{unique('nobody')}@example.com", "password-1234"), 401)


def test_login_refuses_the_username_as_email(api: httpx.Client, reader: Account) -> None:
    response = login(api, reader.username, reader.password)
    assert response.status_code in (401, 422), response.text
    error_messages(response, response.status_code)


@pytest.mark.parametrize(
    "fields",
    [{"email": "a@example.com"}, {"password": "password-1234"}, {"email": 1, "password": "password-1234"}, {}],
    ids=["no-password", "no-email", "email-not-a-string", "empty"],
)
def test_login_refuses_invalid_fields(api: httpx.Client, fields: dict[str, Any]) -> None:
    error_messages(api.post("/users/login", json={"user": fields}), 422)


# --- The current user -----------------------------------------------------------------------------


def test_current_user_is_the_registered_user(api: httpx.Client, reader: Account) -> None:
    response = api.get("/user", headers=reader.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"user"}
    user = body["user"]
    check_user(user)
    assert (user["username"], user["email"], user["bio"], user["image"]) == (reader.username, reader.email, None, None)
    assert jwt.decode(user["token"], SECRET_KEY, algorithms=["HS256"])["sub"] == user_id(reader)


def test_current_user_accepts_the_bearer_prefix(api: httpx.Client, reader: Account) -> None:
    response = api.get("/user", headers={"Authorization": f"Bearer {reader.token}"})
    assert response.status_code == 200, response.text
    assert response.json()["user"]["username"] == reader.username


def test_current_user_is_the_user_of_the_token(api: httpx.Client, writer: Account, reader: Account) -> None:
    assert api.get("/user", headers=writer.headers).json()["user"]["username"] == writer.username
    assert api.get("/user", headers=reader.headers).json()["user"]["username"] == reader.username


# --- Updating the current user --------------------------------------------------------------------


def test_update_bio_and_image(api: httpx.Client, alice: Account) -> None:
    response = update(api, alice, bio="I write.", image="https://example.com/alice.png")
    assert response.status_code == 200, response.text
    user = response.json()["user"]
    check_user(user)
    assert (user["username"], user["email"]) == (alice.username, alice.email)
    assert (user["bio"], user["image"]) == ("I write.", "https://example.com/alice.png")
    again = api.get("/user", headers=alice.headers).json()["user"]
    assert (again["bio"], again["image"]) == ("I write.", "https://example.com/alice.png")


def test_update_is_partial(api: httpx.Client, alice: Account) -> None:
    assert update(api, alice, bio="first", image="https://example.com/a.png").status_code == 200
    response = update(api, alice, bio="second")
    assert response.status_code == 200, response.text
    user = response.json()["user"]
    assert (user["username"], user["email"], user["bio"], user["image"]) == (
        alice.username,
        alice.email,
        "second",
        "https://example.com/a.png",
    )


def test_update_bio_and_image_to_null(api: httpx.Client, alice: Account) -> None:
    assert update(api, alice, bio="some bio", image="https://example.com/a.png").status_code == 200
    response = update(api, alice, bio=None, image=None)
    assert response.status_code == 200, response.text
    user = response.json()["user"]
    assert (user["bio"], user["image"]) == (None, None)
    assert api.get("/user", headers=alice.headers).json()["user"]["bio"] is None


def test_update_answers_a_working_token(api: httpx.Client, alice: Account) -> None:
    response = update(api, alice, bio="token check")
    token = response.json()["user"]["token"]
    me = api.get("/user", headers={"Authorization": f"Token {token}"})
    assert me.status_code == 200, me.text
    assert me.json()["user"]["username"] == alice.username


def test_update_username(api: httpx.Client, alice: Account) -> None:
    new_name = unique("renamed")
    response = update(api, alice, username=new_name)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["username"] == new_name
    # The old token still names the same user (its sub is the id).
    assert api.get("/user", headers=alice.headers).json()["user"]["username"] == new_name
    assert api.get(f"/profiles/{new_name}").status_code == 200
    error_messages(api.get(f"/profiles/{alice.username}"), 404)


def test_update_email_is_stored_lower_cased(api: httpx.Client, alice: Account) -> None:
    name = unique("New")
    response = update(api, alice, email=f"{name}@Example.COM")
    assert response.status_code == 200, response.text
    assert response.json()["user"]["email"] == f"{name.lower()}@example.com"
    assert login(api, f"{name.lower()}@example.com", alice.password).status_code == 200
    error_messages(login(api, alice.email, alice.password), 401)


def test_update_password(api: httpx.Client, alice: Account) -> None:
    new_password = f"new-{uuid.uuid4().hex}"
    response = update(api, alice, password=new_password)
    assert response.status_code == 200, response.text
    assert "password" not in response.text
    error_messages(login(api, alice.email, alice.password), 401)
    assert login(api, alice.email, new_password).status_code == 200


def test_update_to_own_username_and_email_is_allowed(api: httpx.Client, alice: Account) -> None:
    response = update(api, alice, username=alice.username, email=alice.email)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["username"] == alice.username


def test_update_refuses_a_taken_username(api: httpx.Client, alice: Account, reader: Account) -> None:
    error_messages(update(api, alice, username=reader.username), 422)
    assert api.get("/user", headers=alice.headers).json()["user"]["username"] == alice.username


def test_update_refuses_a_taken_email(api: httpx.Client, alice: Account, reader: Account) -> None:
    error_messages(update(api, alice, email=reader.email), 422)
    error_messages(update(api, alice, email=reader.email.upper()), 422)
    assert api.get("/user", headers=alice.headers).json()["user"]["email"] == alice.email


@pytest.mark.parametrize(
    "fields",
    [
        {"email": "not-an-email"},
        {"password": "short"},
        {"username": ""},
        {"username": "a/b"},
        {"username": "a b"},
        {"username": "u" * 65},
        {"bio": 12},
        {"username": None},
        {"email": None},
    ],
    ids=[
        "bad-email",
        "short-password",
        "empty-username",
        "username-with-slash",
        "username-with-space",
        "username-65-chars",
        "bio-not-a-string",
        "username-null",
        "email-null",
    ],
)
def test_update_refuses_invalid_fields(api: httpx.Client, target: Target, fields: dict[str, Any]) -> None:
    error_messages(update(api, target.account, **fields), 422)
    user = api.get("/user", headers=target.account.headers).json()["user"]
    assert (user["username"], user["email"]) == (target.account.username, target.account.email)


def test_update_refuses_a_body_without_user(api: httpx.Client, target: Target) -> None:
    error_messages(api.put("/user", json={"bio": "no wrapper"}, headers=target.account.headers), 422)


def test_update_refuses_no_fields(api: httpx.Client, target: Target) -> None:
    # The spec: "At least **one** field is required."
    error_messages(update(api, target.account), 422)


# --- Tokens that are refused ----------------------------------------------------------------------


def test_current_user_requires_a_valid_token(api: httpx.Client, bad_auth: dict[str, str]) -> None:
    assert_unauthorized(api.get("/user", headers=bad_auth))


def test_update_requires_a_valid_token(api: httpx.Client, target: Target, bad_auth: dict[str, str]) -> None:
    assert_unauthorized(api.put("/user", json={"user": {"bio": "hacked"}}, headers=bad_auth))
    me = api.get("/user", headers=target.account.headers).json()["user"]
    assert me["bio"] is None


def test_token_of_a_deleted_or_unknown_user_is_refused(api: httpx.Client) -> None:
    token = jwt.encode({"sub": "0", "exp": datetime.now(UTC).timestamp() + 3600}, SECRET_KEY, algorithm="HS256")
    assert_unauthorized(api.get("/user", headers={"Authorization": f"Token {token}"}))
