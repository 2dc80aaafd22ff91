"""The handover of the public sockets between two data plane processes of one data dir."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from phemeral.dataplane import handover

OLD = textwrap.dedent(
    """
    import asyncio, socket, sys, tempfile
    from pathlib import Path
    from phemeral.dataplane import handover

    async def main():
        data_dir = Path(sys.argv[1])
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        stop = asyncio.Event()
        private = tempfile.mkdtemp()
        server = handover.HandoverServer(
            private + "/handover.sock", [listener], lambda: ["dep-1"], stop.set
        )
        server.start()
        handover.advertise(data_dir, server.path)
        print(listener.getsockname()[1], flush=True)
        await stop.wait()  # the successor asked: stop (without accepting anything)
        await server.close()
        handover.withdraw(data_dir)

    asyncio.run(main())
    """
)


def test_a_successor_gets_the_same_listening_socket_then_the_old_one_stops(
    tmp_path: Path,
) -> None:
    assert handover.take_over(tmp_path) is None  # nothing serves this data dir
    old = subprocess.Popen(
        [sys.executable, "-c", OLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert old.stdout is not None
        port = int(old.stdout.readline())
        predecessor = handover.take_over(tmp_path)
        assert predecessor is not None
        assert predecessor.pid == old.pid and predecessor.running == ["dep-1"]
        assert predecessor.socket_for(port + 1) is None
        sock = predecessor.socket_for(port)
        assert sock is not None
        # Its accept queue is ours now: a client that connects is accepted here.
        client = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(True)
        accepted, _ = sock.accept()
        accepted.close()
        client.close()
        assert predecessor.alive()
        predecessor.stop()
        asyncio.run(asyncio.wait_for(predecessor.exited(), 60))
        assert old.wait(timeout=60) == 0
        assert handover.serving(tmp_path) is None  # it withdrew its advertisement
        sock.close()
    finally:
        old.kill()
        old.wait()


def test_a_dead_process_is_not_taken_over(tmp_path: Path) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    path = handover.state_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(f'{{"pid": {proc.pid}, "start_time": 1, "socket": "/nonexistent"}}')
    assert handover.serving(tmp_path) is None
    assert handover.take_over(tmp_path) is None
    path.write_text("not json")
    assert handover.take_over(tmp_path) is None
