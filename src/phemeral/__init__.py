"""Phemeral: a self-hostable platform for Python web apps.

A deployment flows through five stages, each a package of its own:

    intake ──► build ──► release ──► runtime ──► router
    (CLI upload,   (detect, install,  (immutable   (processes,     (Host header →
     git push,      verify)            artifact)    scale to zero)  deployment)
     webhook)

`phemeral.deploys` drives one deployment through those stages and records every step in
`phemeral.store`; `phemeral.server` wires the pieces into the one process that
`phemeral serve` runs. See docs/architecture.md for the map and the glossary.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
