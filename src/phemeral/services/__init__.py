"""Backing services: PostgreSQL databases and Redis servers that the platform provisions for an
environment, and whose variables its deployments receive (see docs/architecture.md)."""

# Nothing re-exported: import the module that owns a name (see the docstring).
__all__: list[str] = []
