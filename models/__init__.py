"""Tortoise ORM models, one module per aggregate, and database start/stop."""

from models.db import MODEL_MODULES, close_db, init_db

__all__ = ["MODEL_MODULES", "close_db", "init_db"]
