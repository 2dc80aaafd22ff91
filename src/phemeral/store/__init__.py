"""Durable state of the control plane: tables, migrations, transactions, cursors."""

from phemeral.store.db import Store
from phemeral.store.migrate import migrate

__all__ = ["Store", "migrate"]
