"""The output cap (§10) through each real server: no connection's buffered octets pass it, by
any frame, measured inside the server process after every core event (tests/capcheck.py).

Each server also runs with mutants that let a queue pass the cap, to show the measure sees
it: the core's one-frame-over bug (through both servers) and an asyncio server that does not
report what its transports hold.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from conformance.serverproc import ServerProcess
from conformance.wire import WirePeer
from protocol import Left, MsgpackCodec, Relayed, Say
from protocol.constants import FLUSH_EARLY

CHECKER = Path(__file__).resolve().parent / "capcheck.py"
CAP = 131072
LOCALHOST = "127.0.0.1"


def _flood_until_cut(impl: str, mutant: str | None) -> tuple[str, bool]:
    """Alice floods, carol keeps up, sleepy never reads, until sleepy is cut off as a slow
    consumer or the server reports a cap exceeded: returns the server's stderr, and whether
    sleepy was cut off."""
    # Imported here: test_servers holds the raw never-reading member.
    from test_servers import _raw_member  # noqa: PLC0415

    mutant_args = f" --mutant {mutant}" if mutant else ""
    template = f"{shlex.quote(sys.executable)} {shlex.quote(str(CHECKER))} {impl}{mutant_args}"
    template += " --host {host} --port {port}"
    server = ServerProcess(template, extra_args=["--max-output-buffer", str(CAP)]).start()
    codec = MsgpackCodec()
    alice = WirePeer(server.address, codec=codec, label="alice")
    carol = WirePeer(server.address, codec=codec, label="carol")
    sleepy = None
    try:
        alice.join("alice")
        carol.join("carol")
        sleepy = _raw_member(server.address, "sleepy", rcvbuf=4096)
        alice.barrier()
        carol.barrier()
        text = "x" * 8000
        assert CAP < FLUSH_EARLY * 4
        left = Left("sleepy", LOCALHOST, 2, "slow_consumer")
        cut = False
        for round_ in range(2000):  # 64 MB at most: sleepy is cut off long before
            for _ in range(4):
                alice.send(Say(text))
            alice.barrier()
            heard = [m for m in carol.barrier() if not isinstance(m, Relayed)]
            if heard:
                assert heard == [left]
                cut = True
                break
            if round_ % 50 == 49 and "cap exceeded" in server.stderr_tail(100_000):
                break  # a broken server that never cuts anyone off
    finally:
        for peer in (alice, carol):
            peer.close()
        if sleepy is not None:
            sleepy.close()
        status = server.stop()
    log = server.stderr_tail(100_000)
    assert status == 0, log
    return log, cut


@pytest.mark.parametrize("impl", ["impl_select", "impl_asyncio"])
def test_no_queue_passes_the_cap_through_the_server(impl: str) -> None:
    log, cut = _flood_until_cut(impl, None)
    assert cut, "sleepy was never cut off"
    assert "cap exceeded" not in log, log


@pytest.mark.parametrize(
    ("impl", "mutant"),
    [
        ("impl_select", "core_one_frame_over"),
        ("impl_asyncio", "core_one_frame_over"),
        ("impl_asyncio", "asyncio_ignores_held"),
    ],
)
def test_a_queue_one_frame_over_the_cap_is_seen(impl: str, mutant: str) -> None:
    log, _ = _flood_until_cut(impl, mutant)
    assert "cap exceeded" in log, log
