"""impl_asyncio's own I/O contracts: the event loop ``--loop`` chooses, and that it stops
reading a connection the moment the core says so (spec §14.2), not at the next flush."""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import pytest

from impl_asyncio.server import AsyncioServer, _ClientProtocol, loop_factory, run
from protocol import Hello, Say, encode_message
from protocol.codecs import MsgpackCodec
from protocol.options import ServerOptions
from protocol.serving import EXIT_BAD_CONFIGURATION, make_core


def test_loop_asyncio_is_asyncios_own_and_auto_is_uvloop_when_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    assert loop_factory("asyncio") is None
    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop


def test_without_uvloop_auto_is_asyncio_and_loop_uvloop_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert loop_factory("auto") is None
    options = ServerOptions(loop="uvloop")
    assert run(options, make_core(options, "impl_asyncio")) == EXIT_BAD_CONFIGURATION


class _Transport(asyncio.Transport):
    """What the server asks of a transport, recorded; its socket is a real one, unconnected."""

    def __init__(self) -> None:
        super().__init__()
        self.sock = socket.socket()
        self.reading = True
        self.written: list[bytes] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "socket": self.sock}.get(name, default)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def writelines(self, data: Any) -> None:
        self.written.extend(data)

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        self.sock.close()


def test_reading_stops_before_the_next_read_when_the_core_says_so() -> None:
    # uvloop reads a socket up to 32 times per readiness event, each read a data_received
    # call: were the pause left to the flush at the end of the iteration, a sender's input
    # that waits could grow by 31 reads (8 MiB) past the read budget.
    budget = 4096
    options = ServerOptions(read_budget=budget)

    async def scenario() -> bool:
        core = make_core(options, "impl_asyncio")
        server = AsyncioServer(options, core)
        peer = _ClientProtocol(server)
        transport = _Transport()
        try:
            peer.connection_made(transport)
            codec = MsgpackCodec()
            says = b"".join(encode_message(codec, Say("x" * 200)) for _ in range(4 * budget // 200))
            peer.data_received(encode_message(codec, Hello("alice")) + says)
            outbox = core.outbox(peer.client)
            assert outbox is not None and not outbox.reading  # over its budget: not read
            assert core.input_total > budget
            return transport.reading
        finally:
            transport.abort()

    assert not asyncio.run(scenario()), "the transport reads on until the next flush"
