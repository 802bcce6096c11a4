"""The room (spec §6, §8.1): joining, leaving, name rules, and comparison by key and skeleton."""

from __future__ import annotations

import pytest

from protocol import RemoteProtocolError
from protocol.constants import ErrorCode
from protocol.server import Room, Seat


def joined(*names: str) -> Room[int]:
    room: Room[int] = Room()
    for key, name in enumerate(names, start=1):
        room.join(key, name, f"10.0.0.{key}")
    return room


def refusal(room: Room[int], name: str) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        room.join(99, name, "192.0.2.1")
    assert not info.value.fatal
    assert 99 not in room
    return info.value


def test_join_seats_the_name_as_sent_with_its_host() -> None:
    room: Room[str] = Room()
    seat = room.join("conn", "Zoe\u0308", "::1")
    assert seat == Seat("Zoe\u0308", "::1")
    assert room.seat("conn") is seat
    assert seat.identity == "Zoe\u0308@::1"
    assert "conn" in room
    assert len(room) == 1


def test_members_and_seats_keep_join_order() -> None:
    room = joined("carol", "alice", "bob")
    assert list(room.members) == [1, 2, 3]
    assert [seat.name for seat in room.seats()] == ["carol", "alice", "bob"]
    room.leave(2)
    assert list(room.members) == [1, 3]
    room.join(4, "alice", "10.0.0.4")
    assert list(room.members) == [1, 3, 4]
    assert [seat.name for seat in room.seats()] == ["carol", "bob", "alice"]


def test_leave_returns_the_seat_and_frees_the_name() -> None:
    room = joined("alice", "bob")
    assert room.leave(1) == Seat("alice", "10.0.0.1")
    assert 1 not in room
    assert len(room) == 1
    room.join(3, "ALICE", "10.0.0.3")
    assert room.seat(3).name == "ALICE"


def test_leave_of_a_key_that_never_joined_is_none() -> None:
    room = joined("alice")
    assert room.leave(42) is None
    assert room.members == (1,)


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "x" * 32,
        "\U00020000" * 32,
        "Zoe\u0308",
        "\u674e\u5c0f\u9f8d",
        "o'brien-2",
        "\u0430lice",
        "\u212b",
    ],
    ids=[
        "one",
        "32-ascii",
        "32-non-bmp",
        "combining-mark",
        "cjk",
        "punctuation",
        "cyrillic-a-alone",
        "angstrom-sign-lowercases-to-a-ring",
    ],
)
def test_valid_names_are_accepted(name: str) -> None:
    room: Room[int] = Room()
    assert room.join(1, name, "::1").name == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 33,
        "\U00020000" * 33,
        "al ice",
        "al\tice",
        "alice\n",
        "al\u00a0ice",
        "al\u3000ice",
        "al\u2028ice",
        "al\u2029ice",
        "al@ice",
        "@",
        "al\x07ice",
        "al\x7fice",
        "al\x85ice",
        "al\u200dice",
        "al\u200bice",
        "al\u202eice",
        "al\ufeffice",
        "al\ue000",
        "al\U000f0000",
        "al\uffff",
        "al\ud800",
        "\uff20home",
        "\U0001f98a",
        "\ufb01le",
        "alice\ufe0f",
        "alice\u034f",
        "\u3164",
        "\u2800",
        "\uffa0",
    ],
    ids=[
        "empty",
        "33-ascii",
        "33-non-bmp",
        "space",
        "tab",
        "newline",
        "no-break-space",
        "ideographic-space",
        "line-separator",
        "paragraph-separator",
        "at",
        "only-at",
        "bel",
        "del",
        "nel",
        "zero-width-joiner",
        "zero-width-space",
        "rtl-override",
        "bom",
        "private-use",
        "supplementary-private-use",
        "noncharacter",
        "lone-surrogate",
        "fullwidth-at",
        "emoji",
        "ligature",
        "variation-selector",
        "grapheme-joiner",
        "hangul-filler",
        "braille-blank",
        "halfwidth-hangul-filler",
    ],
)
def test_invalid_names_are_name_invalid(name: str) -> None:
    assert refusal(joined(), name).code is ErrorCode.NAME_INVALID


@pytest.mark.parametrize(
    ("held", "asked"),
    [
        ("Alice", "alice"),
        ("alice", "ALICE"),
        ("Alice", "\uff21\uff2c\uff29\uff23\uff25"),
        ("stra\u00dfe", "STRASSE"),
        ("Zo\u00eb", "Zoe\u0308"),
        ("\u212b", "\u00e5"),
    ],
    ids=[
        "case",
        "upper",
        "fullwidth",
        "sharp-s",
        "composed-vs-combining",
        "angstrom",
    ],
)
def test_names_that_fold_to_the_same_key_are_taken(held: str, asked: str) -> None:
    room = joined(held)
    error = refusal(room, asked)
    assert error.code is ErrorCode.NAME_TAKEN
    assert "is in use" in error.message
    assert room.seat(1).name == held


@pytest.mark.parametrize(
    ("held", "asked"),
    [
        ("alice", "\u0430lice"),
        ("\u0430lice", "alice"),
        ("paypal", "\u0440\u0430\u0443\u0440\u0430l"),
        ("lvan", "IVAN"),
        ("bob", "b0b"),
    ],
    ids=["cyrillic-a", "latin-a-after-cyrillic", "cyrillic-paypal", "capital-i", "digit-zero"],
)
def test_look_alikes_from_other_scripts_are_taken(held: str, asked: str) -> None:
    room = joined(held)
    error = refusal(room, asked)
    assert error.code is ErrorCode.NAME_TAKEN
    assert "looks like a name in use" in error.message


def test_a_look_alike_is_free_again_once_its_holder_left() -> None:
    room = joined("alice")
    room.leave(1)
    assert room.join(2, "\u0430lice", "::1").name == "\u0430lice"
    assert refusal(room, "alice").code is ErrorCode.NAME_TAKEN


def test_an_invalid_name_is_refused_as_invalid_even_when_its_key_is_taken() -> None:
    # The ligature's key is "file", a member's; it is refused for what it is (§7.3: name_invalid
    # before name_taken), and so is the fullwidth @ whose enforced form is '@'.
    room = joined("file", "x")
    assert refusal(room, "\ufb01le").code is ErrorCode.NAME_INVALID
