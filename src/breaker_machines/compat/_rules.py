"""Exclusion rules of the compatibility layers (pybreaker's and aiobreaker's ``exclude``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

__all__ = ["ExcludeRule", "is_excluded"]

ExcludeRule = type[BaseException] | Callable[[BaseException], object]
"""An excluded exception class, or a predicate on the exception."""


def is_excluded(
    rules: Iterable[ExcludeRule],
    error: BaseException,
    *,
    breaker: str | None,
    log: logging.Logger,
) -> bool:
    """Whether ``error`` is an instance of an excluded class or an excluded predicate is
    true for it. A predicate that raises is logged on ``log`` and does not exclude."""
    for rule in rules:
        if isinstance(rule, type):
            if isinstance(error, rule):
                return True
            continue
        try:
            if rule(error):
                return True
        except Exception:
            log.exception(
                "breaker %r: exclude predicate %r raised; treated as no match",
                breaker,
                rule,
                extra={"breaker": breaker},
            )
    return False
