"""Checking server URLs and DSNs, and showing them without their passwords."""

from __future__ import annotations

import urllib.parse

from .._core.errors import ConfigError

__all__ = ["check_url", "redacted"]

_SECRET_PARAMETERS = frozenset({"password", "passwd", "pass", "secret"})


def redacted(url: str) -> str:
    """``url`` with any password (in the user part or the query string) shown as ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    secret_query = any(
        key.lower() in _SECRET_PARAMETERS
        for key, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    )
    if password is None and not secret_query:
        return url  # as given (urlunsplit would drop the // of an empty host)
    if password is not None:
        user, _, host = netloc.rpartition("@")
        name, _, _ = user.partition(":")
        netloc = f"{name}:***@{host}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(key.lower() in _SECRET_PARAMETERS for key, _ in pairs):
            query = "&".join(
                f"{key}=***" if key.lower() in _SECRET_PARAMETERS else f"{key}={value}"
                for key, value in pairs
            )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def check_url(
    field: str, url: object, schemes: tuple[str, ...], example: str, *, require_host: bool = True
) -> str:
    """A URL with one of ``schemes`` and a host; ConfigError (password hidden) otherwise."""
    if not isinstance(url, str):
        raise ConfigError(field, url, f"must be a string such as {example}")
    shown = redacted(url)
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as error:
        message = str(error).replace(url, shown)
        raise ConfigError(field, shown, f"is not a valid URL ({message})") from None
    if parts.scheme not in schemes:
        raise ConfigError(field, shown, f"scheme must be one of {', '.join(schemes)}")
    if require_host and parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(field, shown, "has no host")
    return url
