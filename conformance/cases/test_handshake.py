"""Joining: hello, the welcome and each of its fields, and life before welcome (§5.4.1, §7, §8.2)."""

from __future__ import annotations

from typing import Any

from protocol import Error, Hello, Joined, Left, Say, Welcome
from protocol.constants import MIN_MAX_FRAME, PROTOCOL_VERSION, ErrorCode

from ..context import Context, joined, relayed
from ..registry import MUST, Settings, case

#: welcome's fields and their wire types (§5.4.1); an int is never a bool (§5.1).
WELCOME_FIELDS: dict[str, type] = {
    "name": str,
    "host": str,
    "clients": int,
    "max_frame": int,
    "server": str,
    "proto": int,
    "codec": str,
}


def _first_value(ctx: Context, name: str) -> tuple[Welcome, dict[str, Any]]:
    """Join under ``name``; return the welcome and its raw decoded map."""
    peer = ctx.peer("joiner")
    welcome = peer.join(name)
    raw = peer.values[0]
    assert isinstance(raw, dict), f"the first frame must be a map, got {raw!r}"
    return welcome, raw


@case(
    "WELCOME-FIELDS", "5.4.1", MUST, "welcome has every field, each of its wire type (ints are not booleans)"
)
def test_welcome_fields(ctx: Context) -> None:
    peer = ctx.peer("joiner")
    peer.send(Hello(ctx.name("joiner")))
    peer.next()
    raw = peer.values[0]
    assert isinstance(raw, dict), f"expected a welcome map, got {raw!r}"
    assert raw.get("type") == "welcome", f"expected type 'welcome', got {raw!r}"
    problems = [
        f"{field}: expected {kind.__name__}, got {raw.get(field, '<missing>')!r}"
        for field, kind in WELCOME_FIELDS.items()
        if type(raw.get(field)) is not kind
    ]
    assert not problems, f"welcome fields are wrong: {problems}; welcome was {raw!r}"


@case("WELCOME-NAME", "6.3", MUST, "welcome.name is the name exactly as sent, not normalised")
def test_welcome_name(ctx: Context) -> None:
    # Fullwidth Z and a decomposed e + U+0301: NFKC would change both.
    name = ctx.name("\uff3aoe\u0301-")
    welcome, _ = _first_value(ctx, name)
    assert welcome.name == name, f"welcome.name {welcome.name!r} differs from the name sent {name!r}"


@case("WELCOME-HOST", "8.3", MUST, "welcome.host is the client's IP address as the server sees it, no port")
def test_welcome_host(ctx: Context) -> None:
    peer = ctx.peer("joiner")
    welcome = peer.join(ctx.name("joiner"))
    expected = ctx.host_of(peer)
    assert welcome.host == expected, f"welcome.host: expected {expected!r}, got {welcome.host!r}"


@case("WELCOME-CLIENTS", "8.2", MUST, "welcome.clients counts the members including the new one")
def test_welcome_clients(ctx: Context) -> None:
    first = ctx.member("first")
    assert first.welcome is not None and first.welcome.clients == 1, (
        f"the only member must see clients 1 in its welcome, got {first.welcome!r}"
    )
    second = ctx.member("second")
    assert second.welcome is not None and second.welcome.clients == 2, (
        f"the second member must see clients 2 in its welcome, got {second.welcome!r}"
    )


@case("WELCOME-PROTO", "5.4.1", MUST, "welcome.proto is 1")
def test_welcome_proto(ctx: Context) -> None:
    welcome, raw = _first_value(ctx, ctx.name("joiner"))
    assert type(raw.get("proto")) is int and welcome.proto == PROTOCOL_VERSION, (
        f"welcome.proto must be the integer {PROTOCOL_VERSION}, got {raw.get('proto')!r}"
    )


@case("WELCOME-CODEC", "4.1", MUST, "welcome.codec names the server's codec")
def test_welcome_codec(ctx: Context) -> None:
    welcome, _ = _first_value(ctx, ctx.name("joiner"))
    assert welcome.codec == ctx.codec_name, (
        f"welcome.codec: expected {ctx.codec_name!r}, got {welcome.codec!r}"
    )


@case("WELCOME-MAX-FRAME", "3.2", MUST, "welcome.max_frame is an integer of at least MIN_MAX_FRAME (1024)")
def test_welcome_max_frame(ctx: Context) -> None:
    welcome, _ = _first_value(ctx, ctx.name("joiner"))
    assert MIN_MAX_FRAME <= welcome.max_frame <= 0xFFFF_FFFF, (
        f"welcome.max_frame must be within {MIN_MAX_FRAME}..0xFFFFFFFF, got {welcome.max_frame}"
    )


@case(
    "WELCOME-MAX-FRAME-CONFIGURED",
    "3.2",
    MUST,
    "welcome.max_frame advertises the configured limit, which then applies to the client's frames",
    settings=Settings(max_frame=4096),
)
def test_welcome_max_frame_configured(ctx: Context) -> None:
    peer = ctx.peer("joiner")
    welcome = peer.join(ctx.name("joiner"))
    assert welcome.max_frame == 4096, (
        f"started with --max-frame 4096, welcome.max_frame is {welcome.max_frame}"
    )
    peer.send_raw((4097).to_bytes(4, "big"), "header: 4097 octets follow")
    peer.expect_error(ErrorCode.FRAME_TOO_LARGE, fatal=True)
    peer.wait_closed()


@case("HELLO-EXTRA-FIELDS", "5.1", MUST, "a hello with unknown fields is accepted; the fields are ignored")
def test_hello_extra_fields(ctx: Context) -> None:
    peer = ctx.peer("joiner")
    name = ctx.name("joiner")
    peer.send_value(
        {"type": "hello", "name": name, "colour": "blue", "nested": [1, {"name": "x"}], "type2": 1}
    )
    welcome = peer.expect(lambda m: isinstance(m, Welcome | Error), what="welcome")
    assert isinstance(welcome, Welcome) and welcome.name == name, (
        f"expected welcome for {name!r}, got {welcome!r}"
    )


@case("HELLO-RETRY", "9.2", MUST, "after name_invalid and name_taken the connection may retry hello and join")
def test_hello_retry(ctx: Context) -> None:
    holder = ctx.member("holder")
    peer = ctx.peer("retrier")
    peer.send(Hello("not valid"))
    peer.expect_error(ErrorCode.NAME_INVALID, fatal=False)
    peer.send(Hello(holder.name))
    peer.expect_error(ErrorCode.NAME_TAKEN, fatal=False)
    name = ctx.name("retrier")
    welcome = peer.join(name)
    assert welcome.name == name and welcome.clients == 2, (
        f"expected welcome {name!r} with clients 2, got {welcome!r}"
    )
    holder.expect(joined(name), what=f"joined for {name!r}")


@case("HELLO-TWICE", "7.1", MUST, "hello from a member is already_joined (non-fatal); no second welcome")
def test_hello_twice(ctx: Context) -> None:
    member, observer = ctx.members("member", "observer")
    original = member.name
    member.send(Hello(ctx.name("renamed")))
    member.expect_error(ErrorCode.ALREADY_JOINED, fatal=False)
    member.send(Hello(original))
    member.expect_error(ErrorCode.ALREADY_JOINED, fatal=False)
    member.send(Say("still me"))
    before = member.barrier()
    assert not [m for m in before if isinstance(m, Welcome)], f"a member got a second welcome: {before!r}"
    message = observer.expect(relayed("still me"), what="message 'still me'")
    assert message.name == original, f"the member's name changed from {original!r} to {message.name!r}"


@case(
    "HELLO-BAD-FIELDS",
    "7.1",
    MUST,
    "before joining, a hello with a missing or ill-typed name is bad_message (non-fatal)",
)
def test_hello_bad_fields(ctx: Context) -> None:
    peer = ctx.peer("joiner")
    bad: list[dict[str, Any]] = [
        {"type": "hello"},
        {"type": "hello", "name": 5},
        {"type": "hello", "name": None},
        {"type": "hello", "name": True},
        {"type": "hello", "name": ["alice"]},
        {"type": "hello", "name": {"name": "alice"}},
        {"type": "hello", "name": b"alice"},
    ]
    for value in bad:
        peer.send_value(value)
        peer.expect_error(ErrorCode.BAD_MESSAGE, fatal=False)
    peer.join(ctx.name("joiner"))


@case(
    "HELLO-REQUIRED",
    "7.1",
    MUST,
    "before joining, say, who, ping and any other type are hello_required (fatal)",
)
def test_hello_required(ctx: Context) -> None:
    firsts: list[dict[str, Any]] = [
        {"type": "say", "text": "hi"},
        {"type": "who"},
        {"type": "ping", "token": "t"},
        {"type": "dance"},
        {
            "type": "welcome",
            "name": "x",
            "host": "h",
            "clients": 1,
            "max_frame": 1024,
            "server": "s",
            "proto": 1,
            "codec": ctx.codec_name,
        },
        {"type": "HELLO", "name": "x"},
    ]
    for value in firsts:
        peer = ctx.peer(f"first-{value['type']}")
        peer.send_value(value)
        peer.expect_error(ErrorCode.HELLO_REQUIRED, fatal=True)
        rest = peer.wait_closed()
        assert not rest, f"nothing may follow a fatal error, got {rest!r}"


@case("PREJOIN-SILENT", "7.1", MUST, "a connection that has not joined receives no joined, message or left")
def test_prejoin_silent(ctx: Context) -> None:
    waiting = ctx.peer("waiting")
    first, second = ctx.members("first", "second")
    first.send(Say("not for the waiting connection"))
    second.expect(relayed("not for the waiting connection"))
    ctx.close_gracefully(second)
    first.expect(lambda m: isinstance(m, Left), what="left for second")
    name = ctx.name("waiting")
    welcome = waiting.join(name)
    assert waiting.values and waiting.values[0].get("type") == "welcome", (
        f"the first frame a joining connection receives must be its welcome, got {waiting.values[:3]!r}"
    )
    assert welcome.clients == 2, f"expected clients 2 (first and the new member), got {welcome.clients}"


@case(
    "PREJOIN-LEAVE-SILENT",
    "8.7",
    MUST,
    "a connection that never joined leaves without left and without changing clients",
)
def test_prejoin_leave_silent(ctx: Context) -> None:
    observer = ctx.member("observer")
    quiet = ctx.peer("quiet")
    ctx.close_gracefully(quiet)
    refused = ctx.peer("refused")
    refused.send(Hello("has space"))
    refused.expect_error(ErrorCode.NAME_INVALID, fatal=False)
    refused.reset()
    failed = ctx.peer("failed")
    failed.send(Say("too early"))
    failed.expect_error(ErrorCode.HELLO_REQUIRED, fatal=True)
    failed.wait_closed()
    newcomer = ctx.member("newcomer")
    assert newcomer.welcome is not None and newcomer.welcome.clients == 2, (
        f"connections that never joined must not count: expected clients 2, got {newcomer.welcome!r}"
    )
    seen = observer.barrier()
    lefts = [m for m in seen if isinstance(m, Left)]
    assert not lefts, f"departures of connections that never joined were announced: {lefts!r}"
    notices = [m for m in seen if isinstance(m, Joined)]
    assert [m.name for m in notices] == [newcomer.name], (
        f"expected only joined for the newcomer, got {seen!r}"
    )
