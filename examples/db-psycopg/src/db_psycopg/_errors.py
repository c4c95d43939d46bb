"""libpq's connection errors, with the ``DB_*`` setting to change where libpq's words do not name it."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from db_core import DatabaseSettings

__all__ = ["explain_connect_error"]


def _tls_unavailable(s: DatabaseSettings, _text: str) -> str:
    return (
        f"DB_SSL_MODE={s.ssl_mode} requires TLS, which this server does not offer: enable TLS on the server "
        "(ssl = on), or set DB_SSL_MODE=prefer or disable"
    )


def _not_signed(s: DatabaseSettings, _text: str) -> str:
    if s.ssl_ca_file is None:
        return "the server's certificate is signed by no CA libpq trusts: set DB_SSL_CA_FILE to the CA that signed it"
    hint = f"DB_SSL_CA_FILE={str(s.ssl_ca_file)!r} did not sign the server's certificate: set it to the CA that did"
    if s.ssl_mode not in ("verify-ca", "verify-full"):
        # libpq verifies against a CA it is given whatever the mode, unlike db_core's own TLS context.
        hint += f"; libpq checks a given CA under DB_SSL_MODE={s.ssl_mode or 'unset'} too"
    return hint


def _host_mismatch(s: DatabaseSettings, _text: str) -> str:
    return (
        f"set DB_HOST (now {s.host}) to a name the certificate is issued for, "
        "or DB_SSL_MODE=verify-ca to check the CA but not the name"
    )


def _no_ca(s: DatabaseSettings, _text: str) -> str:
    return (
        f"DB_SSL_MODE={s.ssl_mode} needs DB_SSL_CA_FILE, a PEM file of the CA that signed the server's certificate; "
        "libpq does not use the system's CAs unless told to"
    )


def _key_file(s: DatabaseSettings, _text: str) -> str:
    variable = "DB_SSL_KEY_FILE" if s.ssl_key_file else "DB_SSL_CERT_FILE"
    return f"that is {variable}: make it the service user's own and chmod 600 it"


def _client_certificate(s: DatabaseSettings, _text: str) -> str:
    return (
        "the server asks for a client certificate: set DB_SSL_CERT_FILE and DB_SSL_KEY_FILE "
        f"(now {str(s.ssl_cert_file) if s.ssl_cert_file else 'unset'})"
    )


def _certificate_user(s: DatabaseSettings, _text: str) -> str:
    return f"the common name of the certificate in DB_SSL_CERT_FILE must be DB_USER={s.user}, or mapped to it"


def _handshake(s: DatabaseSettings, _text: str) -> str:
    return (
        f"TLS handshake failed (DB_SSL_MODE={s.ssl_mode or 'unset'}); if the server asks for a client "
        "certificate, check DB_SSL_CERT_FILE and DB_SSL_KEY_FILE"
    )


def _startup_parameter(s: DatabaseSettings, text: str) -> str:
    if "options" not in text:
        return "a connection pooler (PgBouncer) refuses a startup parameter: check DB_OPTIONS and DB_APPLICATION_NAME"
    carried, fixes = [], []
    if s.statement_timeout_seconds is not None:
        carried.append(f"DB_STATEMENT_TIMEOUT_SECONDS={s.statement_timeout_seconds:g}")
        fixes.append(
            "unset DB_STATEMENT_TIMEOUT_SECONDS and set statement_timeout for the role "
            "(ALTER ROLE ... SET statement_timeout), or let PgBouncer 1.20+ pass it on "
            "(track_extra_parameters = statement_timeout)"
        )
    if "options" in s.options:
        carried.append("the options of DB_OPTIONS")
        fixes.append("remove options from DB_OPTIONS")
    if not carried:
        return "a connection pooler (PgBouncer) refuses the startup parameter options: check PGOPTIONS"
    return (
        "a connection pooler (PgBouncer) refuses the startup parameter options, which carries "
        f"{' and '.join(carried)}: {'; '.join(fixes)}"
    )


def _server_parameter(s: DatabaseSettings, _text: str) -> str:
    if "options" in s.options:
        return f"check the options of DB_OPTIONS ({s.options['options']!r})"
    return "check DB_OPTIONS"


# (what libpq or the server says, when it applies, the sentence to add). The first match wins.
_HINTS: tuple[tuple[str, Callable[[DatabaseSettings], bool], Callable[[DatabaseSettings, str], str]], ...] = (
    ("server does not support SSL, but SSL was required", lambda s: s.ssl_mode is not None, _tls_unavailable),
    ("does not match host name", lambda s: True, _host_mismatch),
    ("certificate verify failed", lambda s: True, _not_signed),
    ("root certificate file", lambda s: s.ssl_ca_file is None and s.ssl_mode is not None, _no_ca),
    ("has group or world access", lambda s: s.ssl_cert_file is not None, _key_file),
    ("must be owned by the current user or root", lambda s: s.ssl_cert_file is not None, _key_file),
    ("connection requires a valid client certificate", lambda s: True, _client_certificate),
    ("certificate authentication failed", lambda s: True, _certificate_user),
    ("SSL error", lambda s: True, _handshake),
    ("unsupported startup parameter", lambda s: True, _startup_parameter),
    ("unsupported options startup parameter", lambda s: True, _startup_parameter),
    ("unrecognized configuration parameter", lambda s: bool(s.options), _server_parameter),
    ("invalid value for parameter", lambda s: bool(s.options), _server_parameter),
    ("password authentication failed", lambda s: True, lambda s, _: "check DB_USER and DB_PASSWORD"),
    ("no password supplied", lambda s: True, lambda s, _: "the server asks for a password: set DB_PASSWORD"),
    ('FATAL:  database "', lambda s: True, lambda s, _: "check DB_NAME"),
    ('FATAL:  role "', lambda s: True, lambda s, _: "check DB_USER"),
    ("Connection refused", lambda s: True, lambda s, _: "check DB_HOST and DB_PORT"),
    ("failed to resolve host", lambda s: True, lambda s, _: "check DB_HOST"),
    ("Name or service not known", lambda s: True, lambda s, _: "check DB_HOST"),
    ("name resolution", lambda s: True, lambda s, _: "check DB_HOST"),
)


def explain_connect_error(exc: psycopg.Error, settings: DatabaseSettings) -> psycopg.Error:
    """``exc``, or an error of its type whose first line ends with the setting to change.

    The first line is what ``db check`` shows. Any password libpq might
    quote is masked. Returns ``exc`` itself when there is nothing to add.
    """
    text = str(exc)
    shown = settings.mask_password(text)
    for needle, applies, hint in _HINTS:
        if needle in text and applies(settings):
            first, newline, rest = shown.partition("\n")
            shown = f"{first} ({hint(settings, text)}){newline}{rest}"
            break
    if shown == text:
        return exc
    return type(exc)(shown, pgconn=exc.pgconn)
