"""The state tables in protocol/states.py are the spec's §7 tables (spec/PROTOCOL.md §7.1, §7.2).

The spec's tables are read from the document itself, so a change to either side that the
other does not follow fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocol.constants import FATAL, ErrorCode
from protocol.states import (
    CLIENT_RECEIVES,
    CLIENT_SENDS,
    FATAL_ERROR,
    OTHER,
    SERVER_RECEIVES,
    SERVER_SENDS,
    State,
    rule,
)

SPEC = (Path(__file__).resolve().parent.parent / "spec" / "PROTOCOL.md").read_text(encoding="utf-8")


def section(number: str) -> str:
    start = SPEC.index(f"### {number} ")
    return SPEC[start : SPEC.index("\n### ", start + 1)]


def table_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[1:]  # without the header


def server_rows() -> dict[str, tuple[str, str]]:
    """§7.1's rows: event -> (AWAIT_HELLO cell, ACTIVE cell)."""
    return {row[0]: (row[1], row[2]) for row in table_rows(section("7.1"))}


#: The §7.1 rows about a received message type, and the type each stands for.
SERVER_TYPE_ROWS = {
    "`hello`, valid free name": "hello",
    "`say`": "say",
    "`who`": "who",
    "`ping`": "ping",
    "any other `type` (server types, unknown types)": "nonsense",
}


def verdict(cell: str) -> ErrorCode | None:
    """The error code a §7.1 cell refuses with (``F `code``` or ``NF `code```), or None."""
    match = re.match(r"N?F `([a-z_]+)`", cell)
    return ErrorCode(match.group(1)) if match else None


@pytest.mark.parametrize("row", SERVER_TYPE_ROWS)
@pytest.mark.parametrize("state", [State.AWAIT_HELLO, State.ACTIVE])
def test_the_server_receive_table_is_the_spec_table(row: str, state: State) -> None:
    cells = server_rows()[row]
    cell = cells[0] if state is State.AWAIT_HELLO else cells[1]
    expected = verdict(cell)
    got = rule(SERVER_RECEIVES, state, SERVER_TYPE_ROWS[row])
    assert got.refuse == expected, f"§7.1 {row!r} in {state.name}: {cell!r}"
    if expected is not None:
        assert FATAL[expected] is cell.startswith("F "), cell


def test_every_server_type_row_of_the_spec_is_checked() -> None:
    message_rows = [
        event for event in server_rows() if event.startswith(("`say`", "`who`", "`ping`", "any other"))
    ]
    assert set(message_rows) <= set(SERVER_TYPE_ROWS)
    assert len(message_rows) == 4


def client_rows() -> dict[State, tuple[str, str]]:
    """§7.2's rows: state -> (what the client sends, what receiving does)."""
    return {State[row[0]]: (row[1], row[2]) for row in table_rows(section("7.2"))}


def sends_allowed(table_cell: str) -> set[str]:
    return set(re.findall(r"`([a-z]+)`", table_cell))


@pytest.mark.parametrize("state", [State.AWAIT_HELLO, State.AWAIT_WELCOME, State.ACTIVE])
def test_the_client_send_table_is_the_spec_table(state: State) -> None:
    allowed = sends_allowed(client_rows()[state][0])
    every_type = {"hello", "say", "who", "ping", "welcome", "joined", "message", "left", "roster", "pong"}
    assert {kind for kind in every_type if rule(CLIENT_SENDS, state, kind).refuse is None} == allowed


def transitions(cell: str) -> dict[str, State]:
    """``a, b → STATE; c → STATE`` pairs of a §7.2 cell, by event."""
    moves: dict[str, State] = {}
    for clause in cell.split(";"):
        if "→" not in clause:
            continue
        events, target = clause.split("→")
        for listed in events.split(","):
            event = listed.strip()
            if event == "EOF":
                continue
            key = FATAL_ERROR if event == "fatal `error`" else event.replace("non-fatal ", "").strip("`")
            moves[key] = State[target.strip()]
    return moves


@pytest.mark.parametrize("state", [State.AWAIT_HELLO, State.AWAIT_WELCOME, State.ACTIVE])
def test_the_client_receive_table_moves_as_the_spec_table_says(state: State) -> None:
    moves = transitions(client_rows()[state][1])
    assert moves, client_rows()[state]
    for event, target in moves.items():
        got = rule(CLIENT_RECEIVES, state, event)
        assert got.refuse is None and (got.to or state) is target, (state, event, got)


def test_a_fatal_error_or_shutdown_closes_every_open_state_both_ways() -> None:
    for table in (SERVER_SENDS, CLIENT_RECEIVES):
        for state in table:
            for event in (FATAL_ERROR, "shutdown"):
                assert rule(table, state, event).to is State.CLOSED, (state, event)


def test_the_server_moves_to_active_only_by_sending_welcome_once() -> None:
    assert rule(SERVER_SENDS, State.AWAIT_HELLO, "welcome").to is State.ACTIVE
    assert rule(SERVER_SENDS, State.ACTIVE, "welcome").refuse is ErrorCode.ALREADY_JOINED
    # §7.1: in AWAIT_HELLO the server sends only welcome, error and shutdown.
    for kind in ("joined", "message", "left", "roster", "pong"):
        assert rule(SERVER_SENDS, State.AWAIT_HELLO, kind).refuse is ErrorCode.HELLO_REQUIRED


def test_every_table_has_a_rule_for_other_events() -> None:
    for table in (SERVER_RECEIVES, SERVER_SENDS, CLIENT_SENDS, CLIENT_RECEIVES):
        for rules in table.values():
            assert OTHER in rules
