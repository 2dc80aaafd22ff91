"""The HTTP front door: routes each request by its Host to the control plane or a deployment.

Public surface: `serve_router` / `RouterServer` (run it, `update(snapshot)`), `Backends` (what it
needs from the runtime), `RouterLimits` (timeouts and bounds). See docs/architecture.md.
"""

from phemeral.router.backends import Backends
from phemeral.router.proxy import RouterLimits
from phemeral.router.server import RouterServer, serve_router

__all__ = ["Backends", "RouterLimits", "RouterServer", "serve_router"]
