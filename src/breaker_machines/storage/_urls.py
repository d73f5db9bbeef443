"""Checking server URLs and DSNs, and showing them without their passwords."""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from .._core.errors import ConfigError

__all__ = ["check_postgres_dsn", "check_redis_url", "check_url", "hidden", "redacted"]

# A query (or libpq key=value) parameter whose name holds one of these is a secret.
_SECRET_WORDS = ("pass", "secret", "token")
_SECRET_PAIR = re.compile(
    r"(?i)(\b\w*(?:pass|secret|token)\w*\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&;]*)"
)
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_REDIS_DATABASE = re.compile(r"/?[0-9]*")
_QUOTED = re.compile(r"'[^']*'")


class _Hidden:
    """Stands for a value that may hold a password, in an error message."""

    __slots__ = ("_kind",)

    def __init__(self, value: object) -> None:
        self._kind = type(value).__name__

    def __repr__(self) -> str:
        return f"<{self._kind}, not shown: it may hold a password>"


def hidden(value: object) -> object:
    """What an error may show of ``value`` given for a URL: the URL redacted, or its type."""
    return redacted(value) if isinstance(value, str) else _Hidden(value)


def _secret(key: str) -> bool:
    return any(word in key.lower() for word in _SECRET_WORDS)


def redacted(url: str) -> str:
    """``url`` with any password (in the user part or the query string) shown as ``***``."""
    if "://" not in url:  # not a URL: maybe a libpq "host=... password=..." string
        return _SECRET_PAIR.sub(r"\1***", url)
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    secret_query = any(
        _secret(key) for key, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    )
    if password is None and not secret_query:
        return url  # as given (urlunsplit would drop the // of an empty host)
    if password is not None:
        user, _, host = netloc.rpartition("@")
        name, _, _ = user.partition(":")
        netloc = f"{name}:***@{host}"
    query = parts.query
    if secret_query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{key}=***" if _secret(key) else f"{key}={value}" for key, value in pairs)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def _without_port(url: str) -> str:
    """``url`` redacted, its port hidden too (a mistyped URL may have a password there)."""
    parts = urllib.parse.urlsplit(url)
    user, at, host = parts.netloc.rpartition("@")
    if at:
        user = user.partition(":")[0] + (":***" if ":" in user else "")
    if host.startswith("["):
        host = host[: host.find("]") + 1] if "]" in host else host
    else:
        host = host.partition(":")[0]
    netloc = f"{user}{at}{host}:***"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=""))


def _check_ports(field: str, url: str, parts: urllib.parse.SplitResult, *, multi: bool) -> None:
    hosts = parts.netloc.rpartition("@")[2]
    for host in hosts.split(",") if multi else [hosts]:
        port = host.rpartition("]")[2] if host.startswith("[") else host
        _, colon, number = port.partition(":")
        if not colon or not number:
            continue
        if not (number.isascii() and number.isdigit() and 1 <= int(number) <= 65535):
            raise ConfigError(
                field, _without_port(url), "has a bad port (it must be a number from 1 to 65535)"
            )


def check_url(
    field: str,
    url: object,
    schemes: tuple[str, ...],
    example: str,
    *,
    require_host: bool = True,
    multi_host: bool = False,
) -> str:
    """A URL with one of ``schemes`` and a host; ConfigError (password hidden) otherwise.

    ``multi_host``: a comma-separated list of hosts (``host1:5432,host2:5432``) is accepted.
    A ``unix`` URL needs a socket path instead of a host.
    """
    if not isinstance(url, str):
        raise ConfigError(field, hidden(url), f"must be a string such as {example}")
    shown = redacted(url)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as error:  # bad brackets or characters in the host part
        message = _QUOTED.sub("'...'", str(error))  # it may quote the netloc, password and all
        raise ConfigError(field, shown, f"is not a valid URL ({message})") from None
    if parts.scheme not in schemes:
        raise ConfigError(field, shown, f"scheme must be one of {', '.join(schemes)}")
    if any(not char.isprintable() or char.isspace() for char in url):
        raise ConfigError(
            field,
            shown,
            "must not contain spaces, control characters or unpaired surrogates "
            "(percent-encode them)",
        )
    _check_ports(field, url, parts, multi=multi_host)
    if not multi_host or "," not in parts.netloc:
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ConfigError(
                field, _without_port(url), "has a bad port (it must be a number from 1 to 65535)"
            ) from None
    if parts.scheme == "unix":
        if parts.hostname or not parts.path.startswith("/") or parts.path.endswith("/"):
            raise ConfigError(
                field, shown, "needs the socket's absolute path, as in unix:///run/redis.sock"
            )
    elif require_host and not parts.hostname:
        raise ConfigError(field, shown, "has no host")
    return url


def check_redis_url(url: str) -> None:
    """Refuse, now, what redis-py would only refuse when it connects (it is a checked URL)."""
    parts = urllib.parse.urlsplit(url)
    shown = redacted(url)
    if parts.scheme != "unix" and not _REDIS_DATABASE.fullmatch(parts.path):
        raise ConfigError("url", shown, "path must be a database number, as in redis://host/0")
    try:
        from redis.asyncio import connection
    except ImportError:  # checked when the storage opens
        return
    try:
        options: dict[str, Any] = dict(connection.parse_url(url))
        kind: Any = options.pop("connection_class", connection.Connection)
        kind(**options)  # builds a connection object; nothing connects
    except Exception as error:  # ValueError, TypeError, RedisError: the option is wrong
        message = str(error)
        password = parts.password
        if password:
            message = message.replace(password, "***")
            message = message.replace(urllib.parse.unquote(password), "***")
        raise ConfigError("url", shown, f"has an option redis-py refuses ({message})") from None


def check_postgres_dsn(dsn: str) -> None:
    """Refuse, now, the mistakes asyncpg would only refuse when it connects."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(dsn).query, keep_blank_values=True)
    for mode in query.get("sslmode", []):
        if mode not in _SSLMODES:
            raise ConfigError(
                "dsn", redacted(dsn), f"sslmode must be one of {', '.join(_SSLMODES)}"
            )
