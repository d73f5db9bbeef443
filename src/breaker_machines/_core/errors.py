"""The two errors the pure core can raise."""

from __future__ import annotations

__all__ = ["ConfigError", "InvalidEvent"]


class ConfigError(ValueError):
    """A configuration value is invalid.

    Carries the offending ``field`` and ``value`` so the message always names both, for
    example ``failure_rate=1.5: must be a rate in (0, 1]``.
    """

    field: str
    value: object
    reason: str

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}={value!r}: {reason}")

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, object, str]]:
        return (ConfigError, (self.field, self.value, self.reason))


class InvalidEvent(ValueError):
    """``step()`` was given an input that cannot happen.

    Examples: a time that is NaN or infinite, an outcome from a generation the breaker has
    not reached yet, a probe permit that was never issued, or a state record whose fields
    contradict each other. This is the only error ``step()`` raises.
    """
