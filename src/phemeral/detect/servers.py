"""Which server runs the autodetected default command.

uvicorn (ASGI) and gunicorn (WSGI) unless the project chose another: when hypercorn, granian or
daphne is the server the project depends on directly (and the default one is not), or the only
server anywhere in its resolved dependencies, the default command uses it. A server is added to
the install only when none of them is there.
"""

from __future__ import annotations

from typing import Literal

from phemeral.detect.dependencies import Dependencies
from phemeral.models import AppSpec

Server = Literal["uvicorn", "gunicorn", "hypercorn", "granian", "daphne"]
ASGI: tuple[Server, ...] = ("uvicorn", "hypercorn", "granian", "daphne")
WSGI: tuple[Server, ...] = ("gunicorn", "granian", "hypercorn")


def choose_server(spec: AppSpec, deps: Dependencies) -> tuple[Server, str | None]:
    """The server for ``spec`` and, when it is not the default, why (``file:line``)."""
    order = ASGI if spec.interface == "asgi" else WSGI
    if spec.factory:
        order = tuple(s for s in order if s != "daphne")  # daphne cannot call a factory
    default = order[0]
    for pool in (deps.direct, deps.resolved):
        present = [s for s in order if s in pool]
        if default in present or not present:
            if default in present:
                return default, None
            continue
        chosen = present[0]
        where = deps.direct.get(chosen) or (deps.files[-1] if deps.files else "dependencies")
        return chosen, f"{chosen} is the project's server ({where})"
    return default, None
