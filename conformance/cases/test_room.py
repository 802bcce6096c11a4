"""The room: joined and left with their counts and reasons, fan-out, roster, ping (§8)."""

from __future__ import annotations

from typing import Any

from protocol import Joined, Left, Member, Ping, Pong, Relayed, Roster, Say, Who
from protocol.constants import ErrorCode

from ..context import Context, joined, left, relayed
from ..registry import MUST, SHOULD, Settings, case
from ..wire import WirePeer


def _text_for_relay_size(ctx: Context, sender: WirePeer, size: int) -> str:
    """An ASCII text whose relayed ``message`` payload is ``size`` octets (or the largest below)."""
    host = ctx.host_of(sender)

    def relayed_size(length: int) -> int:
        return len(ctx.codec.encode(Relayed(sender.name, host, "x" * length).to_wire()))

    length = max(0, size - relayed_size(0))
    while length and relayed_size(length) > size:
        length -= 1
    return "x" * length


@case(
    "JOINED-OTHERS", "8.2", MUST, "a new member is announced with joined to every other member, not to itself"
)
def test_joined_others(ctx: Context) -> None:
    first = ctx.member("first")
    second = ctx.member("second")
    notice = first.expect(joined(second.name), what=f"joined for {second.name!r}")
    assert (notice.host, notice.clients) == (ctx.host_of(second), 2), (
        f"expected host and clients 2, got {notice!r}"
    )
    own = [m for m in second.barrier() if isinstance(m, Joined)]
    assert not own, (
        f"the new member must receive no joined (neither its own nor for earlier members): {own!r}"
    )


@case("JOINED-COUNT", "8.2", MUST, "welcome and every joined carry the same count, including the new member")
def test_joined_count(ctx: Context) -> None:
    first, second = ctx.members("first", "second")
    third = ctx.member("third")
    assert third.welcome is not None and third.welcome.clients == 3, (
        f"welcome must count 3, got {third.welcome!r}"
    )
    for peer in (first, second):
        notice = peer.expect(joined(third.name), what=f"joined for {third.name!r}")
        assert notice.clients == 3, f"{peer.label}: joined.clients must be 3, got {notice!r}"


@case(
    "FANOUT-ALL-OTHERS",
    "8.4",
    MUST,
    "a say reaches every other member as message{name, host, text}, never the sender",
)
def test_fanout_all_others(ctx: Context) -> None:
    sender, *others = ctx.members("sender", "second", "third", "fourth")
    sender.send(Say("to everyone else"))
    for peer in others:
        message = peer.expect(relayed("to everyone else"), what=f"message to {peer.label}")
        assert (message.name, message.host) == (sender.name, ctx.host_of(sender)), (
            f"wrong sender: {message!r}"
        )
    echoed = [m for m in sender.barrier() if isinstance(m, Relayed)]
    assert not echoed, f"the sender received its own message: {echoed!r}"


@case("FANOUT-NO-ECHO", "8.4", MUST, "a lone member's say is relayed to nobody and not echoed")
def test_fanout_no_echo(ctx: Context) -> None:
    alone = ctx.member("alone")
    alone.send(Say("anyone?"))
    before = alone.barrier()
    assert not before, f"a lone member's say must produce nothing for it, got {before!r}"


@case("SAY-EMPTY", "8.4", MUST, "an empty text is relayed as an empty text")
def test_say_empty(ctx: Context) -> None:
    sender, receiver = ctx.members("sender", "receiver")
    sender.send(Say(""))
    receiver.expect(relayed("", sender.name), what="message with empty text")


@case("SAY-UNICODE", "5.1", MUST, "texts are relayed unchanged: no normalisation, trimming or re-encoding")
def test_say_unicode(ctx: Context) -> None:
    sender, receiver = ctx.members("sender", "receiver")
    texts = [
        "e\u0301 vs \u00e9",
        "\ufb01 \uff21 \u00b2",
        "  padded  ",
        "line\r\nbreak\u2028sep",
        "\x00nul\x1b[31mesc",
        "\u202eevil\u202c",
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",
        "\ufeffbom",
        "李小龍 العربية Ελένη",
    ]
    for text in texts:
        sender.send(Say(text))
    got = [receiver.expect(lambda m: isinstance(m, Relayed), what="a message").text for _ in texts]
    assert got == texts, f"texts changed in transit:\n sent {texts!r}\n got  {got!r}"


@case(
    "SAY-TEXT-TOO-LONG",
    "8.4",
    MUST,
    "a say whose message would exceed max_frame is text_too_long (non-fatal), relayed to nobody",
)
def test_say_text_too_long(ctx: Context) -> None:
    sender, receiver = ctx.members("sender", "receiver")
    text = _text_for_relay_size(ctx, sender, ctx.max_frame + 1) + "xx"
    sender.send(Say(text))
    sender.expect_error(ErrorCode.TEXT_TOO_LONG, fatal=False)
    sender.send(Say("after"))
    ctx.settle(sender)
    message = receiver.expect(lambda m: isinstance(m, Relayed), what="the message 'after'")
    assert message.text == "after", f"the too-long text was relayed ({len(message.text)} characters)"


@case(
    "SAY-TEXT-MAX",
    "8.4",
    SHOULD,
    "a say whose message is exactly max_frame octets (canonical encoding) is relayed",
)
def test_say_text_max(ctx: Context) -> None:
    sender, receiver = ctx.members("sender", "receiver")
    text = _text_for_relay_size(ctx, sender, ctx.max_frame)
    sender.send(Say(text))
    message = receiver.expect(
        lambda m: isinstance(m, Relayed), timeout=ctx.timeout(10), what="the long message"
    )
    assert message.text == text, f"got a text of {len(message.text)} characters, sent {len(text)}"


@case(
    "WHO-ROSTER",
    "8.5",
    MUST,
    "who gets a roster of every member, asker included, in join order, to the asker only",
)
def test_who_roster(ctx: Context) -> None:
    first, second, third = ctx.members("first", "second", "third")
    second.send(Who())
    roster = second.expect(Roster)
    expected = [Member(p.name, ctx.host_of(p)) for p in (first, second, third)]
    assert list(roster.members) == expected and roster.truncated is False, (
        f"expected members {expected!r}, truncated false; got {roster!r}"
    )
    for peer in (first, third):
        rosters = [m for m in peer.barrier() if isinstance(m, Roster)]
        assert not rosters, f"{peer.label} got someone else's roster: {rosters!r}"


@case("WHO-AFTER-DEPARTURE", "8.5", MUST, "a departed member is no longer in the roster")
def test_who_after_departure(ctx: Context) -> None:
    first, second, third = ctx.members("first", "second", "third")
    ctx.close_gracefully(second)
    first.expect(left(second.name))
    first.send(Who())
    roster = first.expect(Roster)
    assert [m.name for m in roster.members] == [first.name, third.name], f"roster after departure: {roster!r}"


@case(
    "WHO-ROSTER-TRUNCATED",
    "8.5",
    MUST,
    "a roster that would exceed max_frame is the longest join-order prefix that fits, truncated true",
    settings=Settings(max_frame=1024),
)
def test_who_roster_truncated(ctx: Context) -> None:
    peers = []
    for index in range(24):
        peer = ctx.peer(f"m{index}")
        unique = ctx.name("")
        peer.join(unique + "n" * (32 - len(unique)))
        peers.append(peer)
    asker = peers[0]
    asker.barrier()
    asker.send(Who())
    roster = asker.expect(Roster)
    payload = asker.payloads[-1]
    names = [p.name for p in peers]
    got = [m.name for m in roster.members]
    assert roster.truncated is True, f"24 members with 32-character names do not fit 1024 octets: {roster!r}"
    assert got == names[: len(got)], f"the roster must be a join-order prefix: {got!r}"
    assert len(payload) <= 1024, f"the roster payload is {len(payload)} octets, over max_frame 1024"
    if ctx.codec_name == "msgpack":
        hosts = {p.name: ctx.host_of(p) for p in peers}
        longer = [Member(n, hosts[n]) for n in names[: len(got) + 1]]
        size = len(ctx.codec.encode(Roster(tuple(longer), True).to_wire()))
        assert size > 1024, f"{len(got)} members is not the longest prefix: {len(longer)} fit ({size} octets)"


@case(
    "PING-PONG",
    "8.6",
    MUST,
    "ping is answered by pong with the token unchanged (empty, unicode, control characters)",
)
def test_ping_pong(ctx: Context) -> None:
    peer = ctx.member("pinger")
    tokens = [
        "t",
        "",
        "e\u0301",
        "\u00e9",
        "\ufb01",
        "\U0001f600\u200d",
        "\x00\x1b\x7f",
        " spaced ",
        "a" * 300,
    ]
    for token in tokens:
        peer.send(Ping(token))
    got = [peer.expect(Pong).token for _ in tokens]
    assert got == tokens, f"pong tokens differ from ping tokens:\n sent {tokens!r}\n got  {got!r}"


@case("PING-TOKEN-LONG", "8.6", MUST, "a ping of exactly max_frame octets is answered with the whole token")
def test_ping_token_long(ctx: Context) -> None:
    peer = ctx.member("pinger")
    overhead = len(ctx.codec.encode(Ping("").to_wire()))
    length = ctx.max_frame - overhead
    while (
        len(ctx.codec.encode(Ping("\u00e9" * (length // 2) + "t" * (length % 2)).to_wire())) > ctx.max_frame
    ):
        length -= 1
    token = "\u00e9" * (length // 2) + "t" * (length % 2)
    peer.send(Ping(token))
    pong = peer.expect(Pong, timeout=ctx.timeout(10))
    assert pong.token == token, f"token of {len(token)} characters came back as {len(pong.token)} characters"


@case("PING-ONLY-ASKER", "8.6", MUST, "the pong goes to the asker only")
def test_ping_only_asker(ctx: Context) -> None:
    asker, other = ctx.members("asker", "other")
    asker.send(Ping("mine"))
    asker.expect(Pong)
    stray = [m for m in other.barrier() if isinstance(m, Pong)]
    assert not stray, f"another member got the pong: {stray!r}"


def _expect_left(observer: WirePeer, gone: WirePeer, host: str, clients: int, reason: str) -> None:
    notice = observer.expect(left(gone.name), what=f"left for {gone.name!r}")
    expected: dict[str, Any] = {"host": host, "clients": clients, "reason": reason}
    got = {"host": notice.host, "clients": notice.clients, "reason": notice.reason}
    assert got == expected, f"left for {gone.name!r}: expected {expected}, got {got}"


@case(
    "LEFT-QUIT",
    "8.7",
    MUST,
    "EOF at a frame boundary is left{reason: quit}, with clients after the departure",
)
def test_left_quit(ctx: Context) -> None:
    observer, leaver = ctx.members("observer", "leaver")
    host = ctx.host_of(leaver)
    ctx.close_gracefully(leaver)
    _expect_left(observer, leaver, host, 1, "quit")


@case("LEFT-COUNTS", "8.7", MUST, "each departure's left counts the members remaining")
def test_left_counts(ctx: Context) -> None:
    observer, *leavers = ctx.members("observer", "second", "third", "fourth")
    hosts = [ctx.host_of(p) for p in leavers]
    for remaining, (leaver, host) in zip((3, 2, 1), zip(leavers, hosts, strict=True), strict=True):
        ctx.close_gracefully(leaver)
        _expect_left(observer, leaver, host, remaining, "quit")


@case(
    "LEFT-RESET", "8.7", MUST, "a connection reset (RST) at a frame boundary is left{reason: connection_lost}"
)
def test_left_reset(ctx: Context) -> None:
    observer, leaver = ctx.members("observer", "leaver")
    host = ctx.host_of(leaver)
    leaver.reset()
    _expect_left(observer, leaver, host, 1, "connection_lost")


@case("LEFT-ERROR", "8.7", MUST, "a member closed after a fatal error (bad_payload) is left{reason: error}")
def test_left_error(ctx: Context) -> None:
    observer, offender = ctx.members("observer", "offender")
    host = ctx.host_of(offender)
    offender.send_raw(b"\x00\x00\x00\x01\xc1", "payload c1: never valid msgpack or pickle")
    offender.expect_error(ErrorCode.BAD_PAYLOAD, fatal=True)
    _expect_left(observer, offender, host, 1, "error")


@case(
    "LEFT-NOT-TO-SELF",
    "8.7",
    MUST,
    "nothing but what §9.4 allows reaches a departed member: no left for itself",
)
def test_left_not_to_self(ctx: Context) -> None:
    observer, offender = ctx.members("observer", "offender")
    offender.send_raw(b"\x00\x00\x00\x00", "zero-length frame")
    rest = offender.wait_closed()
    kinds = [type(m).__name__ for m in rest]
    assert kinds == ["Error"], f"expected only the error before the close, got {rest!r}"
    observer.expect(left(offender.name))
    assert not [m for m in rest if isinstance(m, Left)]
