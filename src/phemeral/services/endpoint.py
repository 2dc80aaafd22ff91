"""Where backing services listen and where apps reach them: the one place to change it.

Today apps share the host's network, so services listen on the loopback address the
settings name (`services_host`, default 127.0.0.1). When apps run in network namespaces of
their own, this becomes the address of the gateway they can route to.
"""

from __future__ import annotations

from phemeral.settings import Settings


def service_host(settings: Settings) -> str:
    return settings.services_host
