"""``python -m breaker_machines``: the command line."""

from __future__ import annotations

import argparse
import functools
import sys

import anyio

from ._cli import COMMANDS, add_commands, run
from .demo import run_demo

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m breaker_machines`` and the ``breaker-machines`` script."""
    parser = argparse.ArgumentParser(
        prog="breaker-machines",
        description="Circuit breakers for structured concurrency: a demo, the PostgreSQL DDL, "
        "and operator commands for breakers stored in Redis or PostgreSQL.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="watch a breaker protect a flaky service")
    demo.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    demo.add_argument("--seconds", type=float, default=9.0, help="how long to run (default 9)")
    ddl = commands.add_parser(
        "ddl",
        help="print the SQL that creates the PostgreSQL storage's tables and functions",
        description="Print the SQL PostgresStorage(create=True) would run, for databases "
        "where the application may not run DDL (use PostgresStorage(create=False) there).",
    )
    ddl.add_argument("--schema", default="breaker_machines", help="default: breaker_machines")
    ddl.add_argument("--table", default="breakers", help="default: breakers")
    add_commands(commands)
    args = parser.parse_args(argv)
    if args.command in COMMANDS:
        return run(args)
    if args.command == "ddl":
        from ._core.errors import ConfigError
        from .storage.postgres import PostgresStorage

        try:  # the storage's own checks: what it would refuse, the command refuses
            storage = PostgresStorage(
                "postgresql://localhost", schema=args.schema, table=args.table
            )
        except ConfigError as error:
            parser.error(f"--{error.field}: {error}")
        sys.stdout.write(storage.ddl())
        return 0
    if args.command == "demo":
        if not 1.0 <= args.seconds <= 600.0:
            parser.error(f"--seconds={args.seconds}: must be between 1 and 600")
        if args.backend == "trio":
            import importlib.util

            if importlib.util.find_spec("trio") is None:
                parser.error("--backend trio needs trio: pip install 'breaker-machines[trio]'")
        anyio.run(functools.partial(run_demo, args.seconds), backend=args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
