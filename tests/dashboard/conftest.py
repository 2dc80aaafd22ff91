"""Fixtures of the dashboard tests (defined in `harness`)."""

from .harness import browser, server

__all__ = ["browser", "server"]
