"""Running a generated isolation matrix: each case is checked, and no row of the watched tables may
change, whatever the case answered."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from tests.support import Server

C = TypeVar("C")


async def snapshot(server: Server, tables: Sequence[str]) -> dict[str, list[str]]:
    """Every row of `tables`, as text, in a stable order."""
    url = server.database_url
    if url.startswith("sqlite://"):
        conn = sqlite3.connect(f"file:{url.removeprefix('sqlite://')}?mode=ro", uri=True)
        try:
            return {t: sorted(repr(r) for r in conn.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
        finally:
            conn.close()
    pg = await asyncpg.connect(url)
    try:
        return {t: sorted(repr(tuple(r)) for r in await pg.fetch(f"SELECT * FROM {t}")) for t in tables}
    finally:
        await pg.close()


async def run_matrix(
    server: Server, tables: Sequence[str], cases: Sequence[C], check: Callable[[C], Awaitable[str | None]]
) -> dict[str, list[str]]:
    """Check every case (`check` returns None when it holds, else the problem), snapshotting `tables`
    after each; fail with every case that went wrong or changed a row. Returns the first snapshot."""
    first = before = await snapshot(server, tables)
    failures: list[Any] = []
    for case in cases:
        problem = await check(case)
        after = await snapshot(server, tables)
        changed = [table for table in tables if after[table] != before[table]]
        if changed:
            problem = f"{problem or 'answered as expected'} but changed {changed}"
            before = after
        if problem:
            failures.append(f"{case}: {problem}")
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures[:40])
    return first
