"""Shutdown on SIGTERM and SIGINT: notices, no left, exit 0, bounded, port reusable (§12)."""

from __future__ import annotations

import signal
import time

from protocol import Left, Shutdown, Welcome
from protocol.constants import SHUTDOWN_FLUSH_TIMEOUT, SHUTDOWN_REASON, ErrorCode

from ..context import Context
from ..registry import MUST, SHOULD, Settings, case
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
    assert status == 0, f"the server must exit with status 0 after shutdown, got {status}{server.exit_note()}"


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
    assert status == 0, f"exit status {status}{server.exit_note()}"
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
        security=ctx.security,
    )
    ctx.peers.append(peer)
    welcome = peer.join(ctx.name("again"))
    assert isinstance(welcome, Welcome) and welcome.clients == 1


@case(
    "SHUTDOWN-FIN",
    "12",
    MUST,
    "after shutdown the server half-closes (FIN) and drains: input sent then is not answered with RST",
    also=("9.4",),
    process=True,
    stops_server=True,
)
def test_shutdown_fin(ctx: Context) -> None:
    server = ctx.server
    assert server is not None
    peers = [*ctx.members("first", "second"), ctx.peer("waiting")]
    server.signal(signal.SIGTERM)
    for peer in peers:
        peer.expect(Shutdown, timeout=ctx.timeout(5), what="shutdown")
        peer.wait_closed(ctx.timeout(5))
        assert peer.closed_by == "FIN", (
            f"{peer.label}: after shutdown the server reset the connection instead of half-closing "
            "it (§12 step 3 closes as §9.4 steps 2 to 5)"
        )
        problem = peer.end_after_server_fin(bytes(16 * 1024))
        assert not problem, f"{peer.label}: {problem}: the server must drain until EOF (§9.4 step 4)"
    status = server.wait(SHUTDOWN_FLUSH_TIMEOUT + ctx.timeout(3))
    assert status is not None, f"the server still runs {SHUTDOWN_FLUSH_TIMEOUT} s after the shutdown began"
    assert status == 0, f"exit status {status}{server.exit_note()}"


@case(
    "SHUTDOWN-CLOSING-AND-TIMERS",
    "12",
    MUST,
    "shutdown ends lingering connections within its deadline; no hello_timeout after the notice",
    also=("7.4", "9.4"),
    settings=Settings(hello_timeout=1.0),
    process=True,
    stops_server=True,
)
def test_shutdown_closing_and_timers(ctx: Context) -> None:
    server = ctx.server
    assert server is not None
    closing = ctx.member("closing")
    closing.send_raw(b"\x00\x00\x00\x00", "a zero-length frame (bad_payload)")
    closing.expect_error(ErrorCode.BAD_PAYLOAD, fatal=True)
    # This side never half-closes: the server lingers on the connection (§9.4 step 4).
    waiting = ctx.peer("waiting")
    ctx.transcript.note("sending SIGTERM while one connection lingers and one waits for its hello")
    server.signal(signal.SIGTERM)
    notice = waiting.expect(Shutdown, timeout=ctx.timeout(5), what="shutdown")
    assert notice.reason == SHUTDOWN_REASON
    # Neither side half-closes, so the server holds both until its shutdown deadline (2 s), past
    # the waiting connection's 1 s hello timer, which the shutdown stops: a timer left running
    # would write to a connection that has already sent its FIN.
    after = waiting.wait_closed(SHUTDOWN_FLUSH_TIMEOUT + ctx.timeout(3))
    assert not after, f"nothing may follow shutdown, not even hello_timeout: {after!r}"
    rest = closing.wait_closed(SHUTDOWN_FLUSH_TIMEOUT + ctx.timeout(3))
    assert not rest, f"a connection closing after a fatal error gets no shutdown (§12 step 2): {rest!r}"
    status = server.wait(SHUTDOWN_FLUSH_TIMEOUT + ctx.timeout(3))
    assert status is not None, f"the server still runs {SHUTDOWN_FLUSH_TIMEOUT} s after the shutdown began"
    assert status == 0, f"exit status {status}{server.exit_note()}"
