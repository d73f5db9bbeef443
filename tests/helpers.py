"""Small pieces many tests share: a failing dependency and a healthy one."""

from __future__ import annotations

import pytest

from breaker_machines import Breaker, State


class Boom(Exception):
    """The protected dependency's own failure."""


async def fail(message: str = "upstream down") -> None:
    """A dependency call that fails with :class:`Boom`."""
    raise Boom(message)


async def succeed() -> str:
    """A dependency call that answers ``"ok"``."""
    return "ok"


async def trip(breaker: Breaker) -> None:
    """Fail calls through ``breaker`` until its circuit opens."""
    while breaker.state is not State.OPEN:
        with pytest.raises(Boom):
            await breaker.call(fail)
