"""``python -m breaker_machines ddl``: the PostgreSQL DDL for locked-down databases."""

from __future__ import annotations

import asyncio

import pytest

from breaker_machines.__main__ import main
from breaker_machines.storage._postgres_sql import SCHEMA_VERSION


def test_ddl_applies_to_a_fresh_schema_and_creates_every_object(
    postgres_dsn: str, postgres_schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncpg

    assert main(["ddl", "--schema", postgres_schema, "--table", "circuits"]) == 0
    sql = capsys.readouterr().out

    async def apply_twice() -> set[str]:
        connection = await asyncpg.connect(postgres_dsn)
        try:
            await connection.execute(sql)
            await connection.execute(sql)  # idempotent
            rows = await connection.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                postgres_schema,
            )
            version = await connection.fetchval(
                f'SELECT value FROM "{postgres_schema}".circuits_meta '
                "WHERE key = 'schema_version'"
            )
            assert version == str(SCHEMA_VERSION)
            return {row["table_name"] for row in rows}
        finally:
            await connection.close()

    tables = asyncio.run(apply_twice())
    assert tables == {"circuits", "circuits_buckets", "circuits_probes", "circuits_meta"}


@pytest.mark.parametrize("schema", ["x;y", "1abc", 'a"b', "", "a" * 41])
def test_ddl_refuses_a_schema_that_is_not_an_identifier(
    schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["ddl", "--schema", schema])
    assert exit_info.value.code == 2
    assert "schema" in capsys.readouterr().err
