"""Where backing services listen and where apps reach them: the one place that decides.

With network namespaces (`phemeral.network`), apps cannot reach the host's loopback: services
listen on the gateway address every app namespace routes to (`network.GATEWAY`), and each
deployment's allow-list names its own services there. When apps share the host's network
(not root, no ip/nft, ``network = host``), services listen on 127.0.0.1. ``services_host``
set to an address overrides both.
"""

from __future__ import annotations

from phemeral import network
from phemeral.settings import Settings

LOOPBACK = "127.0.0.1"


def service_host(settings: Settings) -> str:
    if settings.services_host != "auto":
        return settings.services_host
    if network.resolve(settings.network, settings.data_dir) is None:
        return LOOPBACK
    return network.GATEWAY
