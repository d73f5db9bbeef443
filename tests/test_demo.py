"""The README's first command: the demo runs, trips and recovers, under both backends."""

from __future__ import annotations

import io

import pytest

from breaker_machines.__main__ import main
from breaker_machines.demo import run_demo


@pytest.mark.anyio
async def test_the_demo_opens_and_recovers() -> None:
    out = io.StringIO()
    counts = await run_demo(seconds=4.0, out=out)
    text = out.getvalue()
    assert "closed -> open" in text
    assert "open -> half_open" in text
    assert "half_open -> closed" in text
    assert text.rstrip().endswith("final state closed")
    assert counts["rejected"] > 0
    assert counts["ok"] > 0


def test_the_cli_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["demo", "--seconds", "0"])
    assert caught.value.code == 2
    assert "--seconds=0.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["nonsense"])


def test_the_cli_runs_the_demo_under_trio(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--backend", "trio", "--seconds", "1"]) == 0
    assert "done:" in capsys.readouterr().out
