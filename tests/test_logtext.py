"""Peer text in logs (spec §14.3): escaped, one record per line, and still exact."""

from __future__ import annotations

import ast
import io
import logging
import pickle
import sys
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import PickleCodec, RemoteProtocolError, get_codec
from protocol.logtext import OneLineFormatter, escape
from protocol.messages import CLIENT_MESSAGES, from_wire
from protocol.server import Room

#: Every general category str.isprintable() refuses; Zs is refused except for U+0020.
UNPRINTABLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"}
ALL = "".join(map(chr, range(sys.maxunicode + 1)))
FORGED = "\x1b[2J\x1b[H2024-01-01 00:00:00 INFO protocol.server: admin joined\r\n"


def unescape(text: str) -> str:
    """The string ``escape`` was given: its output is a Python string body."""
    literal: str = ast.literal_eval('"' + text.replace('"', '\\"') + '"')
    return literal


def test_escape_leaves_no_unprintable_code_point_of_the_whole_code_space() -> None:
    escaped = escape(ALL)
    assert escaped.isprintable()
    assert not {unicodedata.category(char) for char in escaped if char != " "} & UNPRINTABLE
    assert unescape(escaped) == ALL


def test_escape_writes_terminal_escapes_and_line_breaks_visibly() -> None:
    assert escape(FORGED) == (
        "\\x1b[2J\\x1b[H2024-01-01 00:00:00 INFO protocol.server: admin joined\\r\\n"
    )
    assert escape("a\u2028b\u2029c\u0085d") == "a\\u2028b\\u2029c\\x85d"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alice", "alice"),
        ("日本語 ok", "日本語 ok"),  # printable non-ASCII and the plain space stay as they are
        ("\u202eevil", "\\u202eevil"),  # Cf: bidi override
        ("a\u00a0b", "a\\xa0b"),  # Zs other than U+0020
        ("\ud800", "\\ud800"),  # Cs: a lone surrogate no UTF-8 log can encode
        ("\U000e0041", "\\U000e0041"),  # Cf: a tag character
        ("\ue000", "\\ue000"),  # Co
        ("a\tb", "a\\tb"),
        ("C:\\x1b", "C:\\\\x1b"),  # a literal backslash is escaped too, so this is not ESC
    ],
)
def test_escape_examples(text: str, expected: str) -> None:
    assert escape(text) == expected


@given(st.text())
def test_escape_is_printable_and_exact(text: str) -> None:
    escaped = escape(text)
    assert escaped.isprintable()
    assert unescape(escaped) == text


@given(st.text(), st.text())
def test_different_texts_never_escape_alike(first: str, second: str) -> None:
    if first != second:
        assert escape(first) != escape(second)


def test_escape_limit_counts_code_points_of_the_input() -> None:
    assert escape("abcdef", 3) == "abc..."
    assert escape("abc", 3) == "abc"
    assert escape("\x1b" * 10, 2) == "\\x1b\\x1b..."


def test_the_formatter_puts_every_record_on_one_printable_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.logtext")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("joined as %s", FORGED)
        logger.warning("already escaped: %s", escape(FORGED))
        try:
            raise ValueError(FORGED)
        except ValueError:
            logger.exception("bug with %s", "\x1b]0;title\x07")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert all(line.isprintable() for line in lines)
    assert lines[0] == "WARNING joined as " + escape(FORGED)
    # Text a call site escaped is left alone: its backslashes are not doubled.
    assert lines[1] == "WARNING already escaped: " + escape(FORGED)
    assert lines[2].startswith("ERROR bug with \\x1b]0;title\\x07\\nTraceback (most recent call last):\\n")
    assert "ValueError: \\x1b[2J" in lines[2]


# --- the package's messages that quote peer text ------------------------------------------------


def test_a_pickle_global_name_is_escaped_in_the_error() -> None:
    hostile = b"\x80\x02cos\x1b[2J\nsys\rtem\n."
    with pytest.raises(RemoteProtocolError) as info:
        PickleCodec().decode(hostile)
    assert info.value.message.isprintable()
    assert "os\\x1b[2J.sys\\rtem" in info.value.message


def test_a_decoders_complaint_quoting_the_input_is_escaped() -> None:
    # The C unpickler quotes an unknown opcode raw: "invalid load key, '\x1b'".
    for payload in (b"\x1b[2J", b"\x80\x02\x1b.", b"\x80\x02X\x03\x00\x00\x00\x1b\n\r"):
        with pytest.raises(RemoteProtocolError) as info:
            PickleCodec().decode(payload)
        assert info.value.message.isprintable(), info.value.message
    with pytest.raises(RemoteProtocolError) as info:
        get_codec("msgpack").decode(b"\xa3\x1b\n\xff")
    assert info.value.message.isprintable()


def test_an_unknown_type_and_a_taken_name_are_escaped_in_the_error() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        from_wire({"type": FORGED}, CLIENT_MESSAGES)
    assert info.value.message.isprintable()
    assert escape(FORGED[:20]) in info.value.message
    room: Room[int] = Room()
    room.join(1, "alice", "::1")
    with pytest.raises(RemoteProtocolError) as taken:
        room.join(2, "ALICE", "::1")
    assert taken.value.message.isprintable()


def test_pickled_hostile_text_round_trips_to_an_escaped_message() -> None:
    # The type a peer names is quoted from a decoded pickle too.
    payload = pickle.dumps({"type": "\u202e\x1b[31m"}, protocol=2)
    with pytest.raises(RemoteProtocolError) as info:
        from_wire(PickleCodec().decode(payload), CLIENT_MESSAGES)
    assert info.value.message.isprintable()
