"""Runtime: the processes of deployments, scaled to zero and woken by the router.

`supervisor.Runtime` is the facade (register, boot check, ensure running, retire, instances);
`zygote` is the stdlib-only template process run inside the app's sandbox. See
docs/architecture.md (Runtime: scale to zero and wake).
"""

# Nothing re-exported: import the module that owns a name (the zygote runs without this package).
__all__: list[str] = []
