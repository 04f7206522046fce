"""Database start and stop: one Tortoise context per process."""

from __future__ import annotations

from typing import Any

from tortoise import Tortoise, connections

MODEL_MODULES = ["models.accounts", "models.devices", "models.telemetry", "models.commands", "models.sessions"]


def tortoise_config(url: str) -> dict[str, Any]:
    return {
        "connections": {"default": url},
        "apps": {"models": {"models": MODEL_MODULES, "default_connection": "default"}},
        "use_tz": True,
        "timezone": "UTC",
    }


async def init_db(url: str) -> Any:
    """Open the database and create any missing tables; returns the context to close."""
    ctx = await Tortoise.init(config=tortoise_config(url))
    # safe=True: CREATE TABLE IF NOT EXISTS, so a restart on an existing file keeps its data.
    await Tortoise.generate_schemas(safe=True)
    return ctx


async def close_db(ctx: Any) -> None:
    from models.telemetry import close_batch_writer

    close_batch_writer()
    # Close the context Tortoise.init returned: under pytest teardown the global
    # Tortoise.close_connections() can run in another task and find nothing (aiosqlite's
    # non-daemon worker thread then hangs the process at exit).
    if ctx is not None and hasattr(ctx, "close_connections"):
        await ctx.close_connections()
    else:
        await connections.close_all()


async def ping() -> bool:
    conn = connections.get("default")
    await conn.execute_query("SELECT 1")
    return True
