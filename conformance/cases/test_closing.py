"""Closing: FIN and not RST, the drain until EOF, replies before a clean EOF (§9.4, §3.4).

On loopback a reset does not destroy data already received, so cases that only read the
error frame cannot tell a server that half-closes from one that resets the connection. These
cases look at how the stream ends: an orderly end of stream (FIN) after the error, and no
reset when the client goes on sending until its own half-close (§9.4 steps 3 and 4).
"""

from __future__ import annotations

from protocol import Error, Left, Ping, Pong, Relayed, Roster, Say, Who
from protocol.constants import MAX_WIRE_LENGTH, ErrorCode

from ..context import Context, left, relayed
from ..registry import MUST, case
from ..wire import WirePeer

#: Frames the client has already sent when the fatal one is read: unread input at the server.
_PENDING = 64
#: Input following a fatal frame in CLOSE-DRAIN: more than a server reads at once.
_BULK = 1 << 20
#: What the client sends after the server's FIN (§9.4 step 4 reads and discards it).
_AFTER_FIN = 64 * 1024


def _trailer(ctx: Context) -> bytes:
    """Frames sent in the same write as a fatal one: input the server must never read (§9.3)."""
    return b"".join(WirePeer.frame_of(ctx.codec, Say(f"never read {i}").to_wire()) for i in range(_PENDING))


def _half_closed(peer: WirePeer, what: str) -> None:
    """The server ended its side with FIN (§9.4 step 3), not a reset."""
    rest = peer.wait_closed()
    assert not rest, f"nothing may follow the fatal error: {rest!r}"
    assert peer.closed_by == "FIN", (
        f"after {what}, the server reset the connection (RST) instead of half-closing it (FIN): "
        "§9.4 flushes, half-closes and drains, so that the error is not destroyed in flight"
    )


@case(
    "CLOSE-FIN-AFTER-FATAL",
    "9.4",
    MUST,
    "after a fatal error with unread input pending, the server half-closes (FIN), never resets",
)
def test_close_fin_after_fatal(ctx: Context) -> None:
    trailer = _trailer(ctx)
    fatal = [
        ("bad_payload", b"\x00\x00\x00\x01\xc1", ErrorCode.BAD_PAYLOAD),
        ("frame_too_large", MAX_WIRE_LENGTH.to_bytes(4, "big"), ErrorCode.FRAME_TOO_LARGE),
        (
            "hello_required",
            WirePeer.frame_of(ctx.codec, Say("too early").to_wire()),
            ErrorCode.HELLO_REQUIRED,
        ),
    ]
    for what, data, code in fatal:
        peer = ctx.peer(what)
        peer.send_raw(data + trailer, f"{what}, then {_PENDING} more frames in the same write")
        peer.expect_error(code, fatal=True)
        _half_closed(peer, what)
    member = ctx.member("member")
    member.send_raw(fatal[0][1] + trailer, f"a member: bad_payload, then {_PENDING} more frames")
    member.expect_error(ErrorCode.BAD_PAYLOAD, fatal=True)
    _half_closed(member, "bad_payload from a member")


@case(
    "CLOSE-DRAIN",
    "9.4",
    MUST,
    "the server drains input until the client's EOF: input pending at its FIN or sent after is not reset",
)
def test_close_drain(ctx: Context) -> None:
    # More input than a server reads at once follows the fatal frame, so some is unread when the
    # server half-closes: closing the socket then would reset the connection (RFC 1122
    # §4.2.2.13), which can destroy the error frame in flight. Input sent after the server's
    # FIN must be read and discarded too, until this side's EOF.
    for joined_first in (False, True):
        peer = ctx.member("member") if joined_first else ctx.peer("fresh")
        peer.send_raw(
            b"\x00\x00\x00\x00" + bytes(_BULK),
            f"a zero-length frame (bad_payload), then {_BULK >> 10} KiB more",
            tolerate_close=True,
        )
        peer.expect_error(ErrorCode.BAD_PAYLOAD, fatal=True)
        _half_closed(peer, "bad_payload with input pending")
        problem = peer.end_after_server_fin(bytes(_AFTER_FIN))
        assert not problem, (
            f"{problem}: after its FIN the server must read and discard input until the client's "
            "EOF (§9.4 step 4), bounded by CLOSE_LINGER"
        )


@case(
    "EOF-REPLIES-SENT",
    "3.4",
    MUST,
    "frames before a clean EOF are answered (pong, roster, errors) before the server's FIN",
    also=("7.1", "9.4"),
)
def test_eof_replies_sent(ctx: Context) -> None:
    observer, peer = ctx.members("observer", "leaver")
    peer.send_values(
        [Ping("last").to_wire(), Who().to_wire(), {"type": "dance"}, Say("last words").to_wire()]
    )
    peer.half_close()
    rest = peer.wait_closed()
    kinds = [type(m).__name__ for m in rest]
    assert kinds == ["Pong", "Roster", "Error"], (
        f"after a clean EOF the replies to the frames before it must still come, in order "
        f"(pong, roster, error unknown_type), then the close; got {rest!r}"
    )
    assert rest[0] == Pong("last"), f"pong: {rest[0]!r}"
    assert isinstance(rest[1], Roster) and peer.name in [m.name for m in rest[1].members], rest[1]
    assert isinstance(rest[2], Error) and rest[2].code == ErrorCode.UNKNOWN_TYPE, rest[2]
    assert peer.closed_by == "FIN", "after a clean EOF the server closes with FIN, not a reset (§9.4)"
    observer.expect(relayed("last words", peer.name))
    gone = observer.expect(left(peer.name))
    assert isinstance(gone, Left) and gone.reason == "quit", f"expected left quit, got {gone!r}"
    stray = [m for m in observer.barrier() if isinstance(m, Relayed)]
    assert not stray, f"unexpected messages: {stray!r}"
