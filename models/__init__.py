"""Tortoise ORM models, one module per aggregate, and database start/stop."""

from models.db import close_db, init_db

MODEL_MODULES = ["models.accounts", "models.devices", "models.telemetry", "models.commands", "models.sessions"]

__all__ = ["MODEL_MODULES", "close_db", "init_db"]
