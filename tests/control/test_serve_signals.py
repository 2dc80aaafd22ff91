"""`phemeral serve` shuts down in order on SIGTERM or SIGINT, and a second signal does not
cut that shutdown short."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from phemeral.cli.serve import until_signalled


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_lets_the_cleanup_finish(
    second: int, capsys: pytest.CaptureFixture[str]
) -> None:
    done: list[str] = []

    async def serve() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            done.append("cancelled")
            os.kill(os.getpid(), second)  # the impatient second Ctrl-C, during the cleanup
            await asyncio.sleep(0.3)  # cleanup that must not be cut short
            done.append("cleaned up")
            raise

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, os.kill, os.getpid(), signal.SIGTERM)
        await until_signalled(serve())

    asyncio.run(main())
    assert done == ["cancelled", "cleaned up"]
    assert "SIGKILL forces an exit" in capsys.readouterr().err
    # The handlers are gone with it: the default ones are back.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
