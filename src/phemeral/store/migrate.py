"""Bring the database schema up to date with Alembic, programmatically (no alembic.ini)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from phemeral.store.db import Store

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(store: Store) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = store.engine
    return config


def migrate(store: Store) -> None:
    """Apply every pending migration; safe to call on each start."""
    command.upgrade(alembic_config(store), "head")
