"""Invalid ``DB_*`` values raise ConfigurationError naming the variable, never echoing a secret."""

from __future__ import annotations

import traceback
from urllib.parse import quote

import pytest

from db_core import ConfigurationError, DatabaseSettings

# The only line spelling out the password (so traceback source lines cannot fake a leak).
PASSWORD = "S3cr3t@p:ss/#%\u00e9"
MARKER = PASSWORD[:6]
FORMS = {"raw": PASSWORD, "quote(safe='')": quote(PASSWORD, safe=""), "quote()": quote(PASSWORD)}


def raises_configuration_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> ConfigurationError:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError) as info:
        DatabaseSettings(_env_file=None)
    return info.value


def shown_texts(exc: BaseException) -> dict[str, str]:
    """What a user or a log sees of ``exc``: str, repr and the full formatted traceback."""
    return {
        "str": str(exc),
        "repr": repr(exc),
        "traceback.format_exception": "".join(traceback.format_exception(exc)),
    }


def assert_no_secret(exc: BaseException, where: str) -> None:
    for label, text in shown_texts(exc).items():
        for form_label, form in FORMS.items():
            assert form not in text, f"PASSWORD LEAK ({form_label}) in {label} of {where}:\n{text}"
        assert MARKER not in text, f"PASSWORD LEAK (partial) in {label} of {where}:\n{text}"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DB_PORT", "70000"),
        ("DB_PORT", "0"),
        ("DB_PORT", "abc"),
        ("DB_POOL_SIZE", "-5"),
        ("DB_POOL_SIZE", "0"),
        ("DB_MAX_OVERFLOW", "-1"),
        ("DB_CONNECT_TIMEOUT_SECONDS", "0"),
        ("DB_CONNECT_TIMEOUT_SECONDS", "-2"),
        ("DB_POOL_TIMEOUT_SECONDS", "0"),
        ("DB_POOL_PRE_PING", "perhaps"),
        ("DB_ECHO", "maybe"),
        ("DB_SSL_MODE", "sometimes"),
    ],
)
def test_invalid_value_names_the_variable(variable: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    exc = raises_configuration_error(monkeypatch, **{variable: value})
    message = str(exc)
    assert f"{variable}=" in message, message
    assert repr(value) in message, f"the rejected value should be shown for a non-secret variable: {message}"
    assert f"Set {variable} to " in message, f"the message should say how to fix it: {message}"
    assert isinstance(exc, ValueError)
    # pydantic's own (noisier) error is neither chained nor kept as context.
    assert exc.__cause__ is None
    assert exc.__context__ is None


def test_every_invalid_variable_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    message = str(raises_configuration_error(monkeypatch, DB_PORT="70000", DB_POOL_SIZE="-5"))
    assert "DB_PORT=" in message, message
    assert "DB_POOL_SIZE=" in message, message


def test_message_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    message = str(raises_configuration_error(monkeypatch, DB_PORT="70000"))
    assert "1 to 65535" in message, message


@pytest.mark.parametrize("value", [123, ["x", PASSWORD], {"password": PASSWORD}, None])
def test_invalid_password_type_is_never_echoed(value: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        DatabaseSettings(password=value, _env_file=None)
    assert "DB_PASSWORD=***" in str(info.value), str(info.value)
    assert_no_secret(info.value, f"DB_PASSWORD={type(value).__name__}")


INVALID_URLS = {
    "unencoded password": f"postgresql://u:{PASSWORD}@db.example:5432/app",
    "not a URL": f"{PASSWORD} is not a url",
    "port not a number": f"postgresql://u:{quote(PASSWORD, safe='')}@db.example:abc/app",
    "bad sslmode": f"postgresql://u:{quote(PASSWORD, safe='')}@db.example/app?sslmode=sometimes",
    "quote() password, bad sslmode": f"mysql://u:{quote(PASSWORD)}@db.example/app?sslmode=sometimes",
}


@pytest.mark.parametrize("variable", ["DB_URL", "DATABASE_URL"])
@pytest.mark.parametrize("case", list(INVALID_URLS))
def test_invalid_url_is_never_echoed(variable: str, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    exc = raises_configuration_error(monkeypatch, **{variable: INVALID_URLS[case]})
    assert "DB_URL (or DATABASE_URL)=***" in str(exc), str(exc)
    assert_no_secret(exc, f"{variable} ({case})")


def test_invalid_url_keeps_no_secret_in_the_hidden_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """``raise ... from None`` hides pydantic's error from tracebacks, but it stays on ``__context__``.

    Error reporters that walk ``__context__`` regardless (or code that logs
    ``exc.__context__``) would then show pydantic's message, which repeats the input.
    """
    exc = raises_configuration_error(monkeypatch, DB_URL=f"{PASSWORD} is not a url")
    context = exc.__context__
    while context is not None:
        text = f"{context!s} {context!r}"
        assert MARKER not in text, (
            f"BUG (low severity): PASSWORD LEAK in the suppressed __context__ of ConfigurationError "
            f"({type(context).__name__}): 'raise ... from None' in DatabaseSettings.__init__ hides pydantic's "
            f"error from tracebacks but keeps it on exc.__context__, and its text repeats the raw DB_URL: "
            f"{text[:300]}"
        )
        context = context.__context__


def test_other_errors_do_not_hide_the_url_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    # A valid DB_URL with the password, and an invalid DB_POOL_SIZE: only DB_POOL_SIZE is blamed.
    exc = raises_configuration_error(
        monkeypatch, DB_URL=f"postgresql://u:{quote(PASSWORD, safe='')}@db.example/app", DB_POOL_SIZE="-5"
    )
    assert "DB_POOL_SIZE=" in str(exc)
    assert "DB_URL" not in str(exc)
    assert_no_secret(exc, "DB_POOL_SIZE error with DB_URL set")


@pytest.mark.parametrize("port", ["70000", "0"])
def test_port_in_db_url_is_validated_like_db_port(port: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_URL", f"postgresql://u:{quote(PASSWORD, safe='')}@db.example:{port}/app")
    error: ConfigurationError | None = None
    try:
        settings = DatabaseSettings(_env_file=None)
    except ConfigurationError as exc:
        error = exc
    assert error is not None, (
        f"BUG: DB_URL with port {port} was accepted (settings.port={settings.port!r}); DB_PORT={port} is "
        "rejected, but DatabaseSettings._apply_url copies the URL's port with object.__setattr__, "
        "bypassing the 1..65535 check"
    )
    assert "DB_URL" in str(error), str(error)
    assert_no_secret(error, f"DB_URL with port {port}")


def test_options_that_are_not_json_name_db_options(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = raises_configuration_error(monkeypatch, DB_OPTIONS="not json")
    assert "DB_OPTIONS" in str(exc)
    assert "Set DB_OPTIONS to" in str(exc)


def test_a_bad_part_of_the_url_names_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = raises_configuration_error(
        monkeypatch, DB_URL=f"postgresql://u:{quote(PASSWORD, safe='')}@h:5432/d?sslmode=sometimes"
    )
    assert "DB_URL (or DATABASE_URL)=*** is invalid: its ssl_mode 'sometimes'" in str(exc)
    assert_no_secret(exc, "DB_URL with a bad sslmode")
