"""Message rules and errors: maps, types, unknown types and fields, which error, how fatal (§5.1, §7, §9)."""

from __future__ import annotations

from typing import Any

from protocol import Error, Hello, Left, Ping, Pong, Relayed, Roster, Say, Who
from protocol.constants import ErrorCode

from ..context import Context, left, relayed
from ..registry import MUST, case
from ..wire import WirePeer


def _each_error(peer: WirePeer, values: list[Any], code: str, fatal: bool = False) -> None:
    code = str(code)
    for value in values:
        peer.send_value(value)
        error = peer.expect(Error, what=f"error{{code: {code!r}}} for {value!r}")
        assert (error.code, error.fatal) == (code, fatal), (
            f"for {value!r} expected error{{code: {code!r}, fatal: {fatal}}}, got {error!r}"
        )


def _nothing_relayed(ctx: Context, sender: WirePeer, receiver: WirePeer) -> None:
    received = ctx.settle(sender, receiver)[1]
    stray = [m for m in received if isinstance(m, Relayed)]
    assert not stray, f"refused frames were relayed: {stray!r}"


NOT_MAPS: list[Any] = [["say", "hi"], 5, "hello", None, True, 1.5, b"hello", []]


@case(
    "MSG-NOT-MAP",
    "5.1",
    MUST,
    "a payload that is not a map is bad_message (non-fatal), before and after joining",
)
def test_msg_not_map(ctx: Context) -> None:
    peer = ctx.peer("joiner")
    _each_error(peer, NOT_MAPS, ErrorCode.BAD_MESSAGE)
    peer.join(ctx.name("joiner"))
    _each_error(peer, NOT_MAPS, ErrorCode.BAD_MESSAGE)
    peer.barrier()


NO_TYPE: list[Any] = [
    {},
    {"name": "x"},
    {"type": None},
    {"type": 5},
    {"type": True},
    {"type": b"hello", "name": "x"},
    {"type": ["hello"], "name": "x"},
    {"type": {"type": "hello"}},
]


@case(
    "MSG-NO-TYPE",
    "5.1",
    MUST,
    "a map without a string type is bad_message (non-fatal), before and after joining",
)
def test_msg_no_type(ctx: Context) -> None:
    peer = ctx.peer("joiner")
    _each_error(peer, NO_TYPE, ErrorCode.BAD_MESSAGE)
    peer.join(ctx.name("joiner"))
    _each_error(peer, NO_TYPE, ErrorCode.BAD_MESSAGE)
    peer.barrier()


@case(
    "MSG-FIELD-TYPES",
    "5.1",
    MUST,
    "say and ping with a missing or ill-typed field are bad_message (non-fatal), relayed to nobody",
)
def test_msg_field_types(ctx: Context) -> None:
    sender, receiver = ctx.members("sender", "receiver")
    bad: list[Any] = [
        {"type": "say"},
        {"type": "say", "text": None},
        {"type": "say", "text": 5},
        {"type": "say", "text": True},
        {"type": "say", "text": b"bytes"},
        {"type": "say", "text": ["list"]},
        {"type": "say", "text": {"text": "map"}},
        {"type": "say", "txt": "typo"},
        {"type": "ping"},
        {"type": "ping", "token": 7},
        {"type": "ping", "token": False},
        {"type": "ping", "token": b"t"},
    ]
    _each_error(sender, bad, ErrorCode.BAD_MESSAGE)
    _nothing_relayed(ctx, sender, receiver)


@case("MSG-TYPE-CASE", "5.1", MUST, "types compare exactly: SAY, Say, 'say ' are unknown_type for a member")
def test_msg_type_case(ctx: Context) -> None:
    sender, receiver = ctx.members("sender", "receiver")
    values = [
        {"type": t, "text": "x"} for t in ("SAY", "Say", "say ", " say", "s\u0430y", "\uff53\uff41\uff59")
    ]
    _each_error(sender, values, ErrorCode.UNKNOWN_TYPE)
    _nothing_relayed(ctx, sender, receiver)


@case(
    "MSG-UNKNOWN-TYPE",
    "7.1",
    MUST,
    "a member sending an unknown or a server type gets unknown_type (non-fatal)",
)
def test_msg_unknown_type(ctx: Context) -> None:
    sender, receiver = ctx.members("sender", "receiver")
    types = [
        "dance",
        "",
        "message",
        "welcome",
        "joined",
        "left",
        "roster",
        "pong",
        "error",
        "shutdown",
        "x" * 200,
    ]
    values = [{"type": t, "name": "n", "text": "t", "token": "t"} for t in types]
    _each_error(sender, values, ErrorCode.UNKNOWN_TYPE)
    _nothing_relayed(ctx, sender, receiver)


@case(
    "MSG-UNKNOWN-FIELDS",
    "5.1",
    MUST,
    "unknown fields are ignored in say, ping and who; they cannot forge name or host",
)
def test_msg_unknown_fields(ctx: Context) -> None:
    sender, receiver = ctx.members("sender", "receiver")
    sender.send_value(
        {"type": "say", "text": "genuine", "name": "forged", "host": "192.0.2.1", "extra": [1, 2]}
    )
    message = receiver.expect(relayed("genuine"))
    assert (message.name, message.host) == (sender.name, ctx.host_of(sender)), (
        f"fields were forged: {message!r}"
    )
    sender.send_value({"type": "ping", "token": "p", "token2": "q", "fatal": True})
    pong = sender.expect(Pong)
    assert pong == Pong("p"), f"expected pong{{token: 'p'}}, got {pong!r}"
    sender.send_value({"type": "who", "members": [], "truncated": True})
    roster = sender.expect(Roster)
    assert [m.name for m in roster.members] == [sender.name, receiver.name]


@case(
    "MSG-NONSTRING-KEYS",
    "5.1",
    MUST,
    "keys that are not strings never name a field and are ignored",
    also=("4.2",),
)
def test_msg_nonstring_keys(ctx: Context) -> None:
    sender, receiver = ctx.members("sender", "receiver")
    # Octet-string keys are the only non-string keys both codecs can carry (§4.2 rule 4).
    odd: dict[Any, Any] = {"type": "say", "text": "string key wins", b"text": b"bytes key", b"type": b"ping"}
    sender.send_value(odd)
    receiver.expect(relayed("string key wins", sender.name))
    sender.send_value({"type": "say", b"text": "only a bytes key"})
    sender.expect_error(ErrorCode.BAD_MESSAGE, fatal=False)


@case(
    "ERR-NONFATAL-CONTINUES",
    "9.2",
    MUST,
    "after non-fatal errors the server goes on processing the connection's frames",
)
def test_err_nonfatal_continues(ctx: Context) -> None:
    sender, receiver = ctx.members("sender", "receiver")
    frames: list[Any] = [
        Say("one").to_wire(),
        {"type": "say"},
        Say("two").to_wire(),
        {"type": "dance"},
        Say("three").to_wire(),
        Hello("again").to_wire(),
        Say("four").to_wire(),
        ["not", "a", "map"],
        Say("five").to_wire(),
    ]
    sender.send_values(frames)
    errors = [sender.expect(Error).code for _ in range(4)]
    assert errors == ["bad_message", "unknown_type", "already_joined", "bad_message"], f"errors: {errors}"
    got = [receiver.expect(lambda m: isinstance(m, Relayed), what="a message").text for _ in range(5)]
    assert got == ["one", "two", "three", "four", "five"], f"messages around non-fatal errors: {got}"


@case(
    "ERR-FATAL-DISCARDS-FOLLOWING",
    "9.3",
    MUST,
    "after a fatal error no later frame is processed, even one already received",
)
def test_err_fatal_discards_following(ctx: Context) -> None:
    offender, observer = ctx.members("offender", "observer")
    data = b"".join(
        [
            offender.frame(Say("before").to_wire()),
            b"\x00\x00\x00\x00",
            offender.frame(Say("after").to_wire()),
            offender.frame(Ping("after").to_wire()),
        ]
    )
    offender.send_raw(data, "say 'before', a zero-length frame, say 'after', ping, in one write")
    offender.expect_error(ErrorCode.BAD_PAYLOAD, fatal=True)
    rest = offender.wait_closed()
    assert not rest, f"frames after the fatal one were answered: {rest!r}"
    observer.expect(relayed("before"))
    gone = observer.expect(left(offender.name))
    assert gone.reason == "error"
    stray = [m for m in observer.barrier() if isinstance(m, Relayed)]
    assert not stray, f"a frame after the fatal error was relayed: {stray!r}"


@case(
    "ERR-FATAL-DELIVERED",
    "9.4",
    MUST,
    "a fatal error frame arrives before the close although unread input is pending",
)
def test_err_fatal_delivered(ctx: Context) -> None:
    trailer = b"\x00\x00\x00\x10" + b"\x01" * 16
    for joined_first in (False, True):
        peer = ctx.member("member") if joined_first else ctx.peer("fresh")
        data = b"\x00\x00\x00\x01\xc1" + trailer * 8192
        peer.send_raw(data, "an undecodable payload, then 160 KiB more frames", tolerate_close=True)
        error = peer.expect(Error, what="the error{bad_payload} before the close")
        assert (error.code, error.fatal) == (ErrorCode.BAD_PAYLOAD, True), (
            f"expected fatal bad_payload, got {error!r}"
        )
        rest = peer.wait_closed()
        assert not rest, f"nothing may follow the fatal error: {rest!r}"


@case("ERR-ONE-PER-FRAME", "7.3", MUST, "a frame breaking several rules gets exactly one error")
def test_err_one_per_frame(ctx: Context) -> None:
    peer = ctx.peer("fresh")
    peer.send_value({"type": "say", "text": 5})
    errors = [m for m in peer.wait_closed() if isinstance(m, Error)]
    assert [(e.code, e.fatal) for e in errors] == [("hello_required", True)], (
        f"expected one hello_required: {errors}"
    )
    member = ctx.member("member")
    for value in (
        {"type": "hello", "name": 5},
        {"type": "hello", "name": "bad name", "x": None},
        {"type": 7, "text": 1},
    ):
        member.send_value(value)
    before = member.barrier()
    codes = [m.code for m in before if isinstance(m, Error)]
    assert codes == ["already_joined", "already_joined", "bad_message"], (
        f"expected one error per frame: {before!r}"
    )


@case(
    "ERR-ORDER-OF-CHECKS",
    "7.3",
    MUST,
    "checks apply in order: map and type, then state, then fields, then semantics",
)
def test_err_order_of_checks(ctx: Context) -> None:
    fresh = ctx.peer("fresh")
    fresh.send_value({"type": 5, "name": "x"})
    fresh.expect_error(ErrorCode.BAD_MESSAGE, fatal=False)  # 3 before 4: no type is not hello_required
    fresh.send_value({"type": "hello", "name": 5})
    fresh.expect_error(ErrorCode.BAD_MESSAGE, fatal=False)  # 5
    fresh.send_value({"type": "hello", "name": "two words"})
    fresh.expect_error(ErrorCode.NAME_INVALID, fatal=False)  # 6
    fresh.send_value({"type": "ping"})
    fresh.expect_error(ErrorCode.HELLO_REQUIRED, fatal=True)  # 4 before 5: state before fields
    fresh.wait_closed()
    member = ctx.member("member")
    member.send_value({"type": "hello", "name": 5})
    member.expect_error(ErrorCode.ALREADY_JOINED, fatal=False)  # 4 before 5
    member.send_value({"type": "hello", "name": "two words"})
    member.expect_error(ErrorCode.ALREADY_JOINED, fatal=False)  # 4 before 6
    member.send_value({"type": "dance"})
    member.expect_error(ErrorCode.UNKNOWN_TYPE, fatal=False)
    member.send_value({"type": "ping", "token": None})
    member.expect_error(ErrorCode.BAD_MESSAGE, fatal=False)  # 5
    member.send(Who())
    member.expect(Roster)
    member.send_raw(b"\x00\x00\x00\x01\xc1", "undecodable payload")
    member.expect_error(ErrorCode.BAD_PAYLOAD, fatal=True)  # 2
    member.wait_closed()
    assert not [m for m in member.inbox if isinstance(m, Left)]
