"""The hello timeout (§7.4), on a server started with --hello-timeout 1."""

from __future__ import annotations

import time

from protocol import Hello, Left
from protocol.constants import ErrorCode

from ..context import Context
from ..registry import MUST, Settings, case
from ..wire import WirePeer

HELLO_TIMEOUT = 1.0
SHORT = Settings(hello_timeout=HELLO_TIMEOUT)


def _times_out(ctx: Context, peer: WirePeer, since: float) -> None:
    """``peer`` gets error hello_timeout (fatal) no earlier than the timeout, then the close."""
    peer.expect_error(ErrorCode.HELLO_TIMEOUT, fatal=True, timeout=HELLO_TIMEOUT + ctx.timeout(5))
    elapsed = time.monotonic() - since
    peer.wait_closed()
    # The server's timer starts at accept, which is after connect() returned here.
    assert elapsed >= HELLO_TIMEOUT - 0.05, (
        f"hello_timeout came after {elapsed:.2f} s, before the {HELLO_TIMEOUT} s timeout"
    )


@case(
    "HELLO-TIMEOUT",
    "7.4",
    MUST,
    "a connection that sends nothing, or half a hello, gets hello_timeout (fatal)",
    settings=SHORT,
)
def test_hello_timeout(ctx: Context) -> None:
    since = time.monotonic()
    idle = ctx.peer("idle")
    partial = ctx.peer("partial")
    hello = partial.frame(Hello(ctx.name("partial")).to_wire())
    partial.send_raw(hello[:-2], "a hello frame without its last 2 octets")
    _times_out(ctx, idle, since)
    _times_out(ctx, partial, since)


@case(
    "HELLO-TIMEOUT-AFTER-INVALID",
    "7.4",
    MUST,
    "a refused hello does not stop the hello timer",
    settings=SHORT,
)
def test_hello_timeout_after_invalid(ctx: Context) -> None:
    since = time.monotonic()
    peer = ctx.peer("refused")
    peer.send(Hello("no good"))
    peer.expect_error(ErrorCode.NAME_INVALID, fatal=False)
    peer.send_value({"type": "hello"})
    peer.expect_error(ErrorCode.BAD_MESSAGE, fatal=False)
    _times_out(ctx, peer, since)


@case(
    "HELLO-TIMEOUT-MEMBER-UNAFFECTED",
    "7.4",
    MUST,
    "members stay past the hello timeout; a timed-out connection leaves silently",
    settings=SHORT,
)
def test_hello_timeout_member_unaffected(ctx: Context) -> None:
    since = time.monotonic()
    idle = ctx.peer("idle")
    member = ctx.member("member")
    _times_out(ctx, idle, since)
    seen = member.barrier()
    assert not [m for m in seen if isinstance(m, Left)], (
        f"a connection that never joined was announced: {seen!r}"
    )
    newcomer = ctx.member("newcomer")
    assert newcomer.welcome is not None and newcomer.welcome.clients == 2, f"clients: {newcomer.welcome!r}"
