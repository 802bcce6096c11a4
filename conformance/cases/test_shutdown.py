"""Shutdown on SIGTERM and SIGINT: notices, no left, exit 0, bounded, port reusable (§12)."""

from __future__ import annotations

import signal
import time

from protocol import Left, Shutdown, Welcome
from protocol.constants import SHUTDOWN_FLUSH_TIMEOUT, SHUTDOWN_REASON

from ..context import Context
from ..registry import MUST, SHOULD, case
from ..wire import WirePeer


def _shutdown(ctx: Context, signum: int) -> None:
    server = ctx.server
    assert server is not None
    first, second = ctx.members("first", "second")
    waiting = ctx.peer("waiting")
    ctx.transcript.note(f"sending {signal.Signals(signum).name} to the server")
    started = time.monotonic()
    server.signal(signum)
    for peer in (first, second, waiting):
        notice = peer.expect(Shutdown, timeout=ctx.timeout(5), what="shutdown")
        assert notice.reason == SHUTDOWN_REASON, (
            f"shutdown.reason: expected {SHUTDOWN_REASON!r}, got {notice.reason!r}"
        )
        rest = peer.wait_closed(ctx.timeout(5))
        assert not rest, f"{peer.label}: nothing may follow shutdown: {rest!r}"
        peer.close()
    announced = [m for p in (first, second) for m in p.inbox if isinstance(m, Left)]
    assert not announced, f"left was sent during shutdown: {announced!r}"
    status = server.wait(SHUTDOWN_FLUSH_TIMEOUT + ctx.timeout(3))
    ctx.transcript.note(f"server exit status {status} after {time.monotonic() - started:.2f} s")
    assert status == 0, f"the server must exit with status 0 after shutdown, got {status}"


@case(
    "SHUTDOWN-SIGTERM",
    "12",
    MUST,
    "SIGTERM: shutdown notice to every connection, joined or not, no left, exit 0",
    process=True,
    stops_server=True,
)
def test_shutdown_sigterm(ctx: Context) -> None:
    _shutdown(ctx, signal.SIGTERM)


@case(
    "SHUTDOWN-SIGINT",
    "12",
    MUST,
    "SIGINT: shutdown notice to every connection, joined or not, no left, exit 0",
    process=True,
    stops_server=True,
)
def test_shutdown_sigint(ctx: Context) -> None:
    _shutdown(ctx, signal.SIGINT)


@case(
    "SHUTDOWN-BOUNDED",
    "12",
    MUST,
    "shutdown ends within SHUTDOWN_FLUSH_TIMEOUT although a client neither reads nor closes",
    process=True,
    stops_server=True,
)
def test_shutdown_bounded(ctx: Context) -> None:
    server = ctx.server
    assert server is not None
    stubborn = ctx.member("stubborn", rcvbuf=4096)
    talker = ctx.member("talker")
    talker.send_values([{"type": "say", "text": "z" * 4000} for _ in range(64)])
    talker.barrier()
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    status = server.wait(SHUTDOWN_FLUSH_TIMEOUT + ctx.timeout(3))
    elapsed = time.monotonic() - started
    ctx.transcript.note(f"server exit status {status} after {elapsed:.2f} s")
    assert status is not None, (
        f"the server still runs {elapsed:.1f} s after SIGTERM (limit {SHUTDOWN_FLUSH_TIMEOUT} s)"
    )
    assert status == 0, f"exit status {status}"
    stubborn.close()


@case(
    "SHUTDOWN-RESTART-SAME-PORT",
    "12",
    SHOULD,
    "a server stopped with connections open can be restarted on the same port at once",
    process=True,
    stops_server=True,
)
def test_shutdown_restart_same_port(ctx: Context) -> None:
    server = ctx.server
    assert server is not None
    port = server.port
    _shutdown(ctx, signal.SIGTERM)
    again = ctx.spawn(port=port)
    assert again.port == port
    peer = WirePeer(
        again.address,
        codec=ctx.codec,
        label="after-restart",
        transcript=ctx.transcript,
        timeout=ctx.timeout(),
    )
    ctx.peers.append(peer)
    welcome = peer.join(ctx.name("again"))
    assert isinstance(welcome, Welcome) and welcome.clients == 1
