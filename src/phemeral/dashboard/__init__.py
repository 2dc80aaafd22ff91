"""The web dashboard: server-rendered pages over the control plane's HTTP API.

`routes.create_router(settings, admin_token)` gives the FastAPI router the control-plane app
includes at ``/`` (the API stays under ``/api``). `session` signs cookies and CSRF tokens,
`present` turns API values into what a page shows, `control` calls the API in-process.
"""

# Nothing re-exported: import the module that owns a name (see the docstring).
__all__: list[str] = []
