"""Push to deploy: GitHub webhook verification, event decisions and commit statuses.

``signature`` and ``events`` are pure (bytes and headers in, values out); ``statuses`` is the
thin shell that reports commit statuses back to GitHub; ``phemeral.api.webhooks`` wires them to
the HTTP API and the deployment use-cases.
"""

# Nothing re-exported: import the module that owns a name (see the docstring).
__all__: list[str] = []
