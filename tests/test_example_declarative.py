"""examples/declarative_circuits.py runs under both backends and prints what it says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent.parent / "examples" / "declarative_circuits.py"

EXPECTED = """\
names:
  api         __main__.PaymentClient.api
  sessions    __main__.PaymentClient.session[1], __main__.PaymentClient.session[2], \
__main__.PaymentClient.session[3]
  mirrors     __main__.PaymentClient.mirrors:<host>
the API goes down (one circuit for every client):
  alice pays 10: ConnectionError: API unreachable
  ALERT __main__.PaymentClient.api opened
  bob pays 20: ConnectionError: API unreachable
  carol pays 30: rejected, __main__.PaymentClient.api is open
alice's session expires (a circuit per client):
  ALERT __main__.PaymentClient.session[1] opened
  alice refreshes: PermissionError: session expired
  alice refreshes: rejected, __main__.PaymentClient.session[1] is open
  bob refreshes: session refreshed
a mirror goes down (a circuit per mirror):
  ALERT __main__.PaymentClient.mirrors:eu.mirror.example opened
  alice, eu mirror: ConnectionError: eu.mirror.example unreachable
  bob, eu mirror: rejected, __main__.PaymentClient.mirrors:eu.mirror.example is open
  bob, us mirror: receipt from us.mirror.example
the API comes back:
  carol pays 40: paid 40
  api circuit: closed
dropping alice:
  collected: True
  live sessions: 2
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_declarative_circuits_example(backend: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), backend],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stderr == ""
    assert done.stdout == EXPECTED
