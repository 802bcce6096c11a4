"""Framing: lengths at and over the limit, frames split and coalesced, end of stream (§3)."""

from __future__ import annotations

from typing import Any

from protocol import Hello, Left, Ping, Pong, Relayed, Roster, Say, Welcome, Who
from protocol.constants import MAX_WIRE_LENGTH, ErrorCode

from ..context import Context, joined, left, relayed
from ..registry import MUST, case
from ..wire import WirePeer

#: How much a server's resident memory may grow while refusing a 4 GiB header.
RSS_GROWTH_LIMIT_KIB = 16 * 1024


def _padded(ctx: Context, value: dict[str, Any], size: int) -> dict[str, Any]:
    """``value`` plus an unknown field ``pad``, so that its payload is exactly ``size`` octets."""
    length = max(0, size - len(ctx.codec.encode({**value, "pad": ""})))
    while length and len(ctx.codec.encode({**value, "pad": "x" * length})) > size:
        length -= 1
    padded = {**value, "pad": "x" * length}
    assert len(ctx.codec.encode(padded)) == size, f"cannot pad to exactly {size} octets"
    return padded


def _header(length: int) -> bytes:
    return length.to_bytes(4, "big")


def _expect_departure(observer: WirePeer, gone: str, reason: str, clients: int = 1) -> None:
    notice = observer.expect(left(gone), what=f"left for {gone!r}")
    assert (notice.reason, notice.clients) == (reason, clients), (
        f"expected left{{reason: {reason!r}, clients: {clients}}}, got {notice!r}"
    )


@case("FRAME-LEN-ZERO", "3.3", MUST, "a zero-length frame is bad_payload (fatal), before and after joining")
def test_frame_len_zero(ctx: Context) -> None:
    observer = ctx.member("observer")
    fresh = ctx.peer("fresh")
    fresh.send_raw(_header(0), "zero-length frame")
    fresh.expect_error(ErrorCode.BAD_PAYLOAD, fatal=True)
    fresh.wait_closed()
    member = ctx.member("member")
    member.send_raw(_header(0), "zero-length frame")
    member.expect_error(ErrorCode.BAD_PAYLOAD, fatal=True)
    member.wait_closed()
    observer.expect(joined(member.name))
    _expect_departure(observer, member.name, "error")


@case(
    "FRAME-LEN-MAX", "3.2", MUST, "a frame of exactly max_frame octets is accepted, before and after joining"
)
def test_frame_len_max(ctx: Context) -> None:
    observer = ctx.member("observer")
    limit = ctx.max_frame
    peer = ctx.peer("big")
    name = ctx.name("big")
    peer.send_value(_padded(ctx, ctx.hello(name).to_wire(), limit))
    welcome = peer.expect(lambda m: isinstance(m, Welcome), timeout=ctx.timeout(10), what="welcome")
    assert welcome.name == name
    peer.send_value(_padded(ctx, {"type": "say", "text": "padded"}, limit))
    observer.expect(relayed("padded", name), timeout=ctx.timeout(10), what="the padded say, relayed")


@case(
    "FRAME-LEN-OVER",
    "3.2",
    MUST,
    "a header of max_frame + 1 is frame_too_large (fatal); the member leaves with reason error",
)
def test_frame_len_over(ctx: Context) -> None:
    observer, offender = ctx.members("observer", "offender")
    limit = ctx.max_frame
    offender.send_raw(
        _header(limit + 1) + b"\x00" * 64, f"header: {limit + 1} octets (max_frame + 1), 64 sent"
    )
    offender.expect_error(ErrorCode.FRAME_TOO_LARGE, fatal=True)
    offender.wait_closed()
    _expect_departure(observer, offender.name, "error")


@case(
    "FRAME-LEN-OVER-EARLY",
    "3.2",
    MUST,
    "frame_too_large is sent on the header alone, without waiting for payload",
)
def test_frame_len_over_early(ctx: Context) -> None:
    limit = ctx.max_frame
    peer = ctx.peer("early")
    peer.send_raw(_header(limit + 1), f"header only: {limit + 1} octets announced, none sent")
    peer.expect_error(ErrorCode.FRAME_TOO_LARGE, fatal=True)
    peer.wait_closed()


@case(
    "FRAME-LEN-HUGE",
    "3.2",
    MUST,
    "a header of 0xFFFFFFFF is frame_too_large (fatal), before and after joining",
)
def test_frame_len_huge(ctx: Context) -> None:
    fresh = ctx.peer("fresh")
    fresh.send_raw(_header(MAX_WIRE_LENGTH), "header: 0xFFFFFFFF")
    fresh.expect_error(ErrorCode.FRAME_TOO_LARGE, fatal=True)
    fresh.wait_closed()
    observer, member = ctx.members("observer", "member")
    member.send_raw(_header(MAX_WIRE_LENGTH) + b"\xff" * 1024, "header: 0xFFFFFFFF, then 1 KiB")
    member.expect_error(ErrorCode.FRAME_TOO_LARGE, fatal=True)
    member.wait_closed()
    _expect_departure(observer, member.name, "error")


@case(
    "FRAME-LEN-HUGE-NO-ALLOC",
    "3.2",
    MUST,
    "refusing 0xFFFFFFFF headers followed by megabytes of payload does not grow the server's memory",
    also=("14.2",),
    process=True,
)
def test_frame_len_huge_no_alloc(ctx: Context) -> None:
    assert ctx.server is not None
    before = ctx.server.rss_kib()
    assert before is not None, "cannot read the server's resident set size"
    junk = b"\xa5" * (1 << 20)
    for index in range(4):
        peer = ctx.peer(f"huge{index}")
        peer.send_raw(_header(MAX_WIRE_LENGTH), "header: 0xFFFFFFFF")
        for _ in range(4):
            if not peer.send_raw(junk, "1 MiB of payload", tolerate_close=True):
                break
        peer.expect_error(ErrorCode.FRAME_TOO_LARGE, fatal=True)
        peer.wait_closed()
    ctx.settle(ctx.member("after"))
    after = ctx.server.rss_kib()
    assert after is not None
    growth = after - before
    ctx.transcript.note(f"server RSS {before} KiB before, {after} KiB after")
    assert growth <= RSS_GROWTH_LIMIT_KIB, (
        f"the server's RSS grew by {growth} KiB (from {before} to {after}) while refusing 4 GiB headers"
    )


@case(
    "FRAME-SPLIT-EVERY-OFFSET",
    "3.1",
    MUST,
    "hello and say split in two writes at every offset are read whole",
)
def test_frame_split_every_offset(ctx: Context) -> None:
    observer = ctx.member("observer")
    codec = ctx.codec
    name = ctx.name("split")
    hello = WirePeer.frame_of(codec, ctx.hello(name).to_wire())
    # A new connection per offset inside hello: a connection joins once.
    for offset in range(1, len(hello) + 1):
        peer = ctx.peer(f"split@{offset}")
        data = hello + WirePeer.frame_of(codec, Say(f"split at {offset}").to_wire())
        peer.send_raw(data[:offset], f"first {offset} octets")
        observer.barrier()
        peer.send_raw(data[offset:], "the rest")
        peer.expect(Welcome, what=f"welcome (hello split at {offset})")
        observer.expect(relayed(f"split at {offset}", name), what=f"message (split at {offset})")
        ctx.close_gracefully(peer)
        observer.expect(left(name))
    # One joined connection for every offset inside say.
    peer = ctx.peer("split-say")
    peer.join(name)
    for text_index in range(3):
        say = WirePeer.frame_of(codec, Say(f"say {text_index}").to_wire())
        for offset in range(1, len(say)):
            peer.send_raw(say[:offset], f"first {offset} octets")
            observer.barrier()
            peer.send_raw(say[offset:], "the rest")
            observer.expect(relayed(f"say {text_index}", name), what=f"message (say split at {offset})")


@case("FRAME-BYTE-BY-BYTE", "3.1", MUST, "hello, say and ping sent one octet per write are read whole")
def test_frame_byte_by_byte(ctx: Context) -> None:
    observer = ctx.member("observer")
    name = ctx.name("bytewise")
    peer = ctx.peer("bytewise")
    data = b"".join(
        WirePeer.frame_of(ctx.codec, m.to_wire())
        for m in (ctx.hello(name), Say("one at a time"), Ping("bytes"))
    )
    seen = []
    for index in range(len(data)):
        peer.send_raw(data[index : index + 1])
        if index % 4 == 0:
            seen += observer.barrier()
    peer.expect(Welcome)
    pong = peer.expect(Pong)
    assert pong == Pong("bytes"), f"expected pong{{token: 'bytes'}}, got {pong!r}"
    observer.inbox[:0] = seen
    observer.expect(relayed("one at a time", name))


@case("FRAME-COALESCED", "3.1", MUST, "200 frames in one write are each processed, in order")
def test_frame_coalesced(ctx: Context) -> None:
    sender, receiver = ctx.members("sender", "receiver")
    texts = [f"coalesced {i}" for i in range(200)]
    sender.send_values([Say(t).to_wire() for t in texts] + [Ping("end").to_wire()])
    sender.expect(Pong)
    got = [receiver.expect(lambda m: isinstance(m, Relayed), what="a message").text for _ in texts]
    assert got == texts, (
        f"coalesced frames were lost or reordered: first differences {_first_diff(texts, got)}"
    )


@case(
    "FRAME-COALESCED-HELLO-SAY",
    "11",
    MUST,
    "hello, say and who in one write: welcome, then the say relayed, then the roster",
)
def test_frame_coalesced_hello_say(ctx: Context) -> None:
    observer = ctx.member("observer")
    name = ctx.name("eager")
    peer = ctx.peer("eager")
    peer.send_values([Hello(name).to_wire(), Say("pipelined").to_wire(), Who().to_wire()])
    first = peer.next()
    assert isinstance(first, Welcome), f"expected welcome first, got {first!r}"
    roster = peer.expect(Roster)
    assert [m.name for m in roster.members][-1] == name
    observer.expect(relayed("pipelined", name))


@case("FRAME-EOF-MID-HEADER", "3.4", MUST, "EOF after 1 to 3 header octets is left{reason: connection_lost}")
def test_frame_eof_mid_header(ctx: Context) -> None:
    observer = ctx.member("observer")
    for count in (1, 2, 3):
        peer = ctx.member(f"partial{count}")
        observer.expect(joined(peer.name))
        peer.send_raw(b"\x00" * count, f"{count} header octets")
        peer.half_close()
        peer.wait_closed()
        _expect_departure(observer, peer.name, "connection_lost")


@case(
    "FRAME-EOF-MID-PAYLOAD",
    "3.4",
    MUST,
    "EOF inside a payload is left{reason: connection_lost}; the partial frame is not processed",
)
def test_frame_eof_mid_payload(ctx: Context) -> None:
    observer, peer = ctx.members("observer", "truncated")
    say = WirePeer.frame_of(ctx.codec, Say("never complete").to_wire())
    peer.send_raw(say[:-1], "a say frame missing its last octet")
    peer.half_close()
    peer.wait_closed()
    _expect_departure(observer, peer.name, "connection_lost")
    stray = [m for m in observer.barrier() if isinstance(m, Relayed)]
    assert not stray, f"a truncated frame was relayed: {stray!r}"


@case("FRAME-RST-MID-FRAME", "8.7", MUST, "a reset in the middle of a frame is left{reason: connection_lost}")
def test_frame_rst_mid_frame(ctx: Context) -> None:
    observer, peer = ctx.members("observer", "resetter")
    say = WirePeer.frame_of(ctx.codec, Say("cut off").to_wire())
    peer.send_raw(say[: len(say) // 2], "half a say frame")
    observer.barrier()
    peer.reset()
    _expect_departure(observer, peer.name, "connection_lost")


@case(
    "FRAME-EOF-PENDING",
    "3.4",
    MUST,
    "frames received before EOF are processed first: every say, then left quit",
)
def test_frame_eof_pending(ctx: Context) -> None:
    observer, peer = ctx.members("observer", "leaver")
    texts = [f"last words {i}" for i in range(20)]
    peer.send_values([Say(t).to_wire() for t in texts])
    peer.half_close()
    peer.wait_closed()
    got = []
    while True:
        item = observer.expect(lambda m: isinstance(m, Relayed | Left), what="the messages, then left")
        if isinstance(item, Left):
            assert item.name == peer.name and item.reason == "quit", f"expected left quit, got {item!r}"
            break
        got.append(item.text)
    assert got == texts, f"messages before EOF were lost or reordered: {_first_diff(texts, got)}"


def _first_diff(expected: list[str], got: list[str]) -> str:
    for index, (a, b) in enumerate(zip(expected, got, strict=False)):
        if a != b:
            return f"at {index}: expected {a!r}, got {b!r}"
    return f"expected {len(expected)} items, got {len(got)}"
