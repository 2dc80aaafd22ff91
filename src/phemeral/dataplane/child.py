"""Entry point of the processes the data plane starts (``python -m phemeral.dataplane.child``):

    control CONFIG         the control plane: API, dashboard, builder (`server.run_control_plane`)
    router CONFIG INDEX    one more router on the public port (`process.run_router_worker`)

CONFIG is the 0600 JSON file the data plane wrote (settings and its private socket paths).
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvloop


def main(argv: list[str]) -> int:
    from phemeral.cli.serve import configure_logging, until_signalled
    from phemeral.dataplane.process import read_child_config, run_router_worker
    from phemeral.server import run_control_plane

    if len(argv) < 2 or argv[0] not in ("control", "router"):
        print("usage: python -m phemeral.dataplane.child control|router CONFIG", file=sys.stderr)
        return 2
    settings, dataplane, api = read_child_config(Path(argv[1]))
    configure_logging(settings)
    if argv[0] == "control":
        uvloop.run(until_signalled(run_control_plane(settings, dataplane, api)))
    else:
        uvloop.run(until_signalled(run_router_worker(settings, dataplane, api)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
