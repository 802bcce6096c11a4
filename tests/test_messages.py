"""Typed messages (spec §5): strict field types on construction, from_wire, to_wire order."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from protocol import (
    CLIENT_MESSAGES,
    SERVER_MESSAGES,
    Error,
    Hello,
    Joined,
    Left,
    LocalProtocolError,
    Member,
    Message,
    Ping,
    Pong,
    Relayed,
    RemoteProtocolError,
    Roster,
    Say,
    Shutdown,
    Welcome,
    Who,
)
from protocol.constants import ErrorCode
from protocol.messages import from_wire

#: §5.2: every type, its direction and its fields in encoding order after "type".
SPEC_FIELDS: dict[str, tuple[str, ...]] = {
    "hello": ("name",),
    "say": ("text",),
    "who": (),
    "ping": ("token",),
    "welcome": ("name", "host", "clients", "max_frame", "server", "proto", "codec"),
    "joined": ("name", "host", "clients"),
    "message": ("name", "host", "text"),
    "left": ("name", "host", "clients", "reason"),
    "roster": ("members", "truncated"),
    "pong": ("token",),
    "error": ("code", "message", "fatal"),
    "shutdown": ("reason",),
}

ALICE = Member("alice", "127.0.0.1")
EXAMPLES: dict[str, Message] = {
    "hello": Hello("alice"),
    "say": Say("hi"),
    "who": Who(),
    "ping": Ping("t"),
    "welcome": Welcome("alice", "127.0.0.1", 1, 1 << 20, "test/1", 1, "msgpack"),
    "joined": Joined("bob", "::1", 2),
    "message": Relayed("bob", "::1", "hi"),
    "left": Left("bob", "::1", 1, "quit"),
    "roster": Roster((ALICE,), truncated=False),
    "pong": Pong("t"),
    "error": Error("name_taken", "taken", fatal=False),
    "shutdown": Shutdown("server shutting down"),
}

#: For each spec type: values of the wrong type, including the ones Python conflates.
WRONG: dict[str, list[Any]] = {
    "string": [b"bytes", None, 1, True, ["x"]],
    "int": [True, False, 1.0, "1", None, -1],
    "bool": [0, 1, None, "true"],
    "members": [None, [ALICE], ({"name": "a", "host": "b"},), "alice"],
}
#: On the wire members are a list of maps, so a list of maps is the one right shape there.
WRONG_ON_WIRE = {**WRONG, "members": [None, [ALICE], [["a", "b"]], {"name": "a", "host": "b"}, "alice"]}
KIND = {
    "clients": "int",
    "max_frame": "int",
    "proto": "int",
    "fatal": "bool",
    "truncated": "bool",
    "members": "members",
}


def table_for(kind: str) -> dict[str, type[Message]]:
    return CLIENT_MESSAGES if kind in CLIENT_MESSAGES else SERVER_MESSAGES


def test_the_tables_hold_exactly_the_spec_types() -> None:
    assert set(CLIENT_MESSAGES) == {"hello", "say", "who", "ping"}
    assert set(SERVER_MESSAGES) == set(SPEC_FIELDS) - set(CLIENT_MESSAGES)
    assert set(EXAMPLES) == set(SPEC_FIELDS)


@pytest.mark.parametrize("kind", SPEC_FIELDS)
def test_to_wire_puts_type_first_then_the_fields_in_spec_order(kind: str) -> None:
    wire = EXAMPLES[kind].to_wire()
    assert list(wire) == ["type", *SPEC_FIELDS[kind]]
    assert wire["type"] == kind


def test_to_wire_gives_roster_members_as_maps_of_name_then_host() -> None:
    wire = Roster((ALICE, Member("bob", "::1")), truncated=True).to_wire()
    assert wire["members"] == [{"name": "alice", "host": "127.0.0.1"}, {"name": "bob", "host": "::1"}]
    assert [list(member) for member in wire["members"]] == [["name", "host"]] * 2


def _wrong_cases(wrong: dict[str, list[Any]]) -> list[Any]:
    cases = []
    for kind, names in SPEC_FIELDS.items():
        for name in names:
            for value in wrong[KIND.get(name, "string")]:
                cases.append(pytest.param(kind, name, value, id=f"{kind}.{name}={value!r}"))
    return cases


@pytest.mark.parametrize(("kind", "field", "value"), _wrong_cases(WRONG))
def test_construction_refuses_a_field_of_the_wrong_type(kind: str, field: str, value: Any) -> None:
    with pytest.raises(LocalProtocolError) as info:
        dataclasses.replace(EXAMPLES[kind], **{field: value})  # type: ignore[type-var]
    assert info.value.code is ErrorCode.BAD_MESSAGE


@pytest.mark.parametrize(("kind", "field", "value"), _wrong_cases(WRONG_ON_WIRE))
def test_from_wire_refuses_a_field_of_the_wrong_type(kind: str, field: str, value: Any) -> None:
    wire = EXAMPLES[kind].to_wire()
    wire[field] = value
    with pytest.raises(RemoteProtocolError) as info:
        from_wire(wire, table_for(kind))
    assert info.value.code is ErrorCode.BAD_MESSAGE
    assert not info.value.fatal


@pytest.mark.parametrize("bad", [("a", 1), (1, "a"), (None, "a")])
def test_member_needs_string_name_and_host(bad: tuple[Any, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        Member(*bad)


def test_messages_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Hello("alice").name = "mallory"  # type: ignore[misc]


@pytest.mark.parametrize("kind", SPEC_FIELDS)
def test_from_wire_rebuilds_every_message(kind: str) -> None:
    assert from_wire(EXAMPLES[kind].to_wire(), table_for(kind)) == EXAMPLES[kind]


@pytest.mark.parametrize("kind", SPEC_FIELDS)
def test_from_wire_ignores_unknown_fields(kind: str) -> None:
    wire: dict[Any, Any] = {
        **EXAMPLES[kind].to_wire(),
        "extra": [1, {"x": b"y"}],
        "Name": 5,
        b"name": "bin key",
    }
    assert from_wire(wire, table_for(kind)) == EXAMPLES[kind]


def test_from_wire_ignores_unknown_fields_of_roster_members() -> None:
    wire = {"type": "roster", "members": [{"name": "a", "host": "b", "since": 3}], "truncated": False}
    assert from_wire(wire, SERVER_MESSAGES) == Roster((Member("a", "b"),), truncated=False)


@pytest.mark.parametrize("kind", [kind for kind, names in SPEC_FIELDS.items() if names])
def test_from_wire_names_the_missing_fields(kind: str) -> None:
    wire = {"type": kind}
    with pytest.raises(RemoteProtocolError) as info:
        from_wire(wire, table_for(kind))
    assert info.value.code is ErrorCode.BAD_MESSAGE
    assert all(name in info.value.message for name in SPEC_FIELDS[kind])


@pytest.mark.parametrize(
    "value",
    [
        ["hello"],
        42,
        "hello",
        None,
        b"\x82",
        {"name": "alice"},
        {"type": 1},
        {"type": None},
        {b"type": "hello"},
    ],
    ids=["list", "int", "str", "nil", "bytes", "no-type", "int-type", "nil-type", "bin-type-key"],
)
def test_from_wire_needs_a_map_with_a_string_type(value: Any) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        from_wire(value, CLIENT_MESSAGES)
    assert info.value.code is ErrorCode.BAD_MESSAGE


@pytest.mark.parametrize("kind", ["nonsense", "", "HELLO", "welcome"])
def test_from_wire_refuses_types_not_accepted_from_that_side(kind: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        from_wire({"type": kind, "name": "alice"}, CLIENT_MESSAGES)
    assert info.value.code is ErrorCode.UNKNOWN_TYPE


def test_server_types_are_unknown_to_a_server_and_client_types_to_a_client() -> None:
    for kind in SERVER_MESSAGES:
        with pytest.raises(RemoteProtocolError):
            from_wire(EXAMPLES[kind].to_wire(), CLIENT_MESSAGES)
    for kind in CLIENT_MESSAGES:
        with pytest.raises(RemoteProtocolError):
            from_wire(EXAMPLES[kind].to_wire(), SERVER_MESSAGES)


def test_roster_members_must_be_an_array_not_a_tuple() -> None:
    # A pickle can carry a tuple; §5.1 accepts only a list as an array, even an empty one.
    for members in ((), ({"name": "a", "host": "b"},)):
        with pytest.raises(RemoteProtocolError) as info:
            from_wire({"type": "roster", "members": members, "truncated": False}, SERVER_MESSAGES)
        assert info.value.code is ErrorCode.BAD_MESSAGE


@pytest.mark.parametrize(
    "member",
    [{"name": "a"}, {"host": "b"}, {"name": b"a", "host": "b"}, ["a", "b"], "a@b"],
    ids=["no-host", "no-name", "bin-name", "list", "string"],
)
def test_roster_members_must_be_maps_of_string_name_and_host(member: Any) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        from_wire({"type": "roster", "members": [member], "truncated": False}, SERVER_MESSAGES)
    assert info.value.code is ErrorCode.BAD_MESSAGE


def _deep_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [[0] * 500_000, _deep_list(100_000), 10**5000, "x" * 100_000],
    ids=["long-list", "deep-list", "huge-int", "long-string-for-int"],
)
def test_refusals_of_hostile_values_stay_short_and_raise_nothing_else(value: Any) -> None:
    # A pickle can carry all of these; the error text goes back to the peer in one frame.
    field = "clients" if isinstance(value, str) else "name"
    kind = "joined" if field == "clients" else "hello"
    wire = {**EXAMPLES[kind].to_wire(), field: value}
    with pytest.raises(RemoteProtocolError) as info:
        from_wire(wire, table_for(kind))
    assert info.value.code is ErrorCode.BAD_MESSAGE
    assert len(info.value.message) < 200


def test_an_int_field_takes_large_and_zero_values() -> None:
    assert Joined("bob", "::1", 0).clients == 0
    assert Joined("bob", "::1", 1 << 64).clients == 1 << 64
