"""The data plane: what keeps serving while the control plane crashes, restarts or is upgraded.

`phemeral serve` runs `process.run_dataplane`: the router on the public port and the runtime
(every app process) in one process, which starts the control plane (API, dashboard, builder)
and any extra router workers as children. They talk over a private Unix socket
(`wire` frames, `channel` connections, `service` the data plane's side, `remote` the others');
the routing table is saved in ``{data_dir}/routing.json`` (`routes_file`) for the next start.
"""

__all__: list[str] = []  # import the modules themselves (the children import only what they run)
