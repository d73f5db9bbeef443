"""The command line's operator commands (``status``, ``open``, ``close``, ``reset``,
``disable``, ``enable``, ``watch``); ``__main__`` only dispatches to them."""

from __future__ import annotations

from .operator import COMMANDS, add_commands, run

__all__ = ["COMMANDS", "add_commands", "run"]
