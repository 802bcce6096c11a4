"""The test vectors of spec §15 (spec/vectors/) against the protocol package, both directions,
and against their generator (tools/make_vectors.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import construct as cs
import pytest

from protocol import (
    CLIENT_MESSAGES,
    NEED_DATA,
    SERVER_MESSAGES,
    Codec,
    Connection,
    ConnectionClosed,
    Error,
    FrameDecoder,
    Hello,
    Message,
    RemoteProtocolError,
    Role,
    State,
    Welcome,
    encode_message,
    get_codec,
)
from protocol.constants import (
    DEFAULT_MAX_FRAME,
    FATAL,
    HEADER_SIZE,
    MAX_PAYLOAD_OBJECTS,
    PROTOCOL_VERSION,
    CodecName,
    ErrorCode,
)
from protocol.frame import FRAME, parse_frame
from protocol.messages import from_wire
from protocol.names import name_key, name_problem, name_skeleton
from protocol.server import Close, Room, Send, ServerRules

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "spec" / "vectors"
GENERATOR = ROOT / "tools" / "make_vectors.py"

#: Every vector file, the fields of its entries, and the test that exercises it.
SCHEMAS: dict[str, set[str]] = {
    "frames.json": {"id", "description", "stream", "payloads", "error", "max_frame", "eof", "clean"},
    "messages.json": {"id", "codec", "direction", "message", "hex"},
    "invalid.json": {"id", "codec", "state", "hex", "error", "fatal", "description"},
    "names.json": {"id", "description", "member", "name", "error", "key", "skeleton"},
}


@cache
def document(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return loaded


#: Files whose vectors parametrize some test; filled while the tests are collected.
PARAMETRIZED: set[str] = set()


def vectors(name: str, **matching: Any) -> list[Any]:
    """The vectors of one file as test parameters named by id, those with the ``matching`` fields only."""
    PARAMETRIZED.add(name)
    return [
        pytest.param(vector, id=vector["id"])
        for vector in document(name)["vectors"]
        if all(vector[key] == value for key, value in matching.items())
    ]


# --- the files themselves ------------------------------------------------------------------------


def test_every_vector_file_is_exercised() -> None:
    files = {path.name for path in VECTORS.iterdir()}
    assert files == set(SCHEMAS)
    assert files <= PARAMETRIZED


@pytest.mark.parametrize("name", SCHEMAS)
def test_vector_file_is_well_formed(name: str) -> None:
    doc = document(name)
    assert set(doc) == {"version", "description", "vectors"}
    assert doc["version"] == 1
    ids = [vector["id"] for vector in doc["vectors"]]
    assert ids == sorted(set(ids)), "ids are unique and sorted"
    for vector in doc["vectors"]:
        assert set(vector) == SCHEMAS[name], vector["id"]
        for key in ("stream", "hex"):
            if key in vector:
                assert vector[key] == bytes.fromhex(vector[key]).hex(), "lowercase hex without spaces"


def test_generator_writes_exactly_the_committed_files(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(SCHEMAS)
    for name in SCHEMAS:
        assert (tmp_path / name).read_bytes() == (VECTORS / name).read_bytes(), f"{name} is stale"


def test_messages_cover_every_type_both_ways_in_both_codecs() -> None:
    seen = {(v["codec"], v["direction"], v["message"]["type"]) for v in document("messages.json")["vectors"]}
    for codec in CodecName:
        assert {kind for c, d, kind in seen if (c, d) == (codec, "c2s")} == set(CLIENT_MESSAGES)
        assert {kind for c, d, kind in seen if (c, d) == (codec, "s2c")} == set(SERVER_MESSAGES)
    reasons = {
        v["message"]["reason"] for v in document("messages.json")["vectors"] if v["message"]["type"] == "left"
    }
    assert reasons == {"quit", "connection_lost", "slow_consumer", "error"}


def test_invalid_inputs_cover_every_refusal_a_frame_can_cause_in_both_codecs() -> None:
    causes = {
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.BAD_PAYLOAD,
        ErrorCode.BAD_MESSAGE,
        ErrorCode.HELLO_REQUIRED,
        ErrorCode.NAME_INVALID,
        ErrorCode.ALREADY_JOINED,
        ErrorCode.UNKNOWN_TYPE,
    }
    for codec in CodecName:
        seen = {v["error"] for v in document("invalid.json")["vectors"] if v["codec"] == codec}
        assert seen == causes


def test_the_msgpack_hello_vector_is_the_spec_example_byte_for_byte() -> None:
    # §5.5, written out by hand: header, fixmap(2), "type", "hello", "name", "alice".
    expected = (
        "00000017" + "82" + "a4" + "74797065" + "a5" + "68656c6c6f" + "a4" + "6e616d65" + "a5" + "616c696365"
    )
    [vector] = [v for v in document("messages.json")["vectors"] if v["id"] == "msgpack-c2s-hello"]
    assert vector["hex"] == expected
    assert encode_message(get_codec("msgpack"), Hello("alice")).hex() == expected


# --- frames.json -----------------------------------------------------------------------------------


def frame_outcome(vector: dict[str, Any], chunks: list[bytes]) -> tuple[list[str], str | None, bool | None]:
    """Payloads, error and (at EOF) cleanliness a FrameDecoder reports for ``chunks``."""
    decoder = FrameDecoder(vector["max_frame"])
    payloads: list[str] = []
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            while (payload := decoder.next_frame()) is not None:
                payloads.append(payload.hex())
    except RemoteProtocolError as exc:
        return payloads, exc.code.value, None
    return payloads, None, (decoder.buffered == 0) if vector["eof"] else None


def expected_frame_outcome(vector: dict[str, Any]) -> tuple[list[str], str | None, bool | None]:
    return vector["payloads"], vector["error"], vector["clean"]


@pytest.mark.parametrize("vector", vectors("frames.json"))
def test_frame_vector_fed_whole(vector: dict[str, Any]) -> None:
    stream = bytes.fromhex(vector["stream"])
    assert frame_outcome(vector, [stream]) == expected_frame_outcome(vector)


@pytest.mark.parametrize("vector", vectors("frames.json"))
def test_frame_vector_fed_one_byte_at_a_time(vector: dict[str, Any]) -> None:
    stream = bytes.fromhex(vector["stream"])
    chunks = [stream[i : i + 1] for i in range(len(stream))]
    assert frame_outcome(vector, chunks) == expected_frame_outcome(vector)


@pytest.mark.parametrize("vector", vectors("frames.json"))
def test_frame_vector_split_at_every_offset(vector: dict[str, Any]) -> None:
    stream = bytes.fromhex(vector["stream"])
    for offset in range(len(stream) + 1):
        outcome = frame_outcome(vector, [stream[:offset], stream[offset:]])
        assert outcome == expected_frame_outcome(vector), offset


@pytest.mark.parametrize("vector", vectors("frames.json"))
def test_frame_vector_agrees_with_the_construct_schema(vector: dict[str, Any]) -> None:
    stream = bytes.fromhex(vector["stream"])
    payloads = [bytes.fromhex(payload) for payload in vector["payloads"]]
    complete = sum(HEADER_SIZE + len(payload) for payload in payloads)
    # The complete frames: the schema parses them to the payloads and builds them back.
    parsed = cs.GreedyRange(FRAME).parse(stream[:complete])
    assert [bytes(frame.payload) for frame in parsed] == payloads
    assert b"".join(FRAME.build({"payload": payload}) for payload in payloads) == stream[:complete]
    rest = stream[complete:]
    if vector["error"] is not None:
        assert cs.Int32ub.parse(rest[:HEADER_SIZE]) > vector["max_frame"]
    elif rest:
        # What remains is the start of a frame, never a whole one.
        with pytest.raises(RemoteProtocolError):
            parse_frame(rest)
        assert vector["clean"] in (False, None)


class _Transparent:
    """Turns each payload into a hello naming its hex, to watch framing through a Connection."""

    name = CodecName.MSGPACK
    max_objects: int | None = None

    def encode(self, value: dict[str, Any]) -> bytes:
        raise AssertionError("not for sending")

    def decode(self, payload: bytes) -> Any:
        return {"type": "hello", "name": payload.hex()}


@pytest.mark.parametrize("vector", vectors("frames.json", eof=True))
def test_frame_vector_eof_through_a_connection(vector: dict[str, Any]) -> None:
    connection = Connection(Role.SERVER, codec=_Transparent(), max_frame=vector["max_frame"])
    connection.receive_data(bytes.fromhex(vector["stream"]))
    connection.receive_data(b"")
    events = []
    while not isinstance(event := connection.next_event(), ConnectionClosed):
        events.append(event)
    assert events == [Hello(payload) for payload in vector["payloads"]]
    assert event.clean is vector["clean"]


# --- messages.json ----------------------------------------------------------------------------------


def accepted(vector: dict[str, Any]) -> dict[str, type[Message]]:
    return CLIENT_MESSAGES if vector["direction"] == "c2s" else SERVER_MESSAGES


@pytest.mark.parametrize("vector", vectors("messages.json"))
def test_message_vector_decodes_to_its_message(vector: dict[str, Any]) -> None:
    codec = get_codec(vector["codec"])
    value = codec.decode(parse_frame(bytes.fromhex(vector["hex"])))
    # json.dumps keeps key order and tells true from 1, and fails on bytes.
    assert json.dumps(value, ensure_ascii=False) == json.dumps(vector["message"], ensure_ascii=False)
    assert from_wire(value, accepted(vector)).to_wire() == vector["message"]


@pytest.mark.parametrize("vector", vectors("messages.json"))
def test_message_vector_is_what_the_encoder_produces(vector: dict[str, Any]) -> None:
    message = from_wire(vector["message"], accepted(vector))
    assert list(message.to_wire()) == list(vector["message"])
    assert encode_message(get_codec(vector["codec"]), message).hex() == vector["hex"]


WELCOME = Welcome("alice", "127.0.0.1", 1, DEFAULT_MAX_FRAME, "test/1", PROTOCOL_VERSION, "msgpack")
ALICE = Hello("alice")


@pytest.mark.parametrize("vector", vectors("messages.json"))
def test_message_vector_through_both_ends_of_a_connection(vector: dict[str, Any]) -> None:
    codec = get_codec(vector["codec"])
    frame = bytes.fromhex(vector["hex"])
    message = from_wire(vector["message"], accepted(vector))
    kind = vector["message"]["type"]
    client = Connection(Role.CLIENT, codec=codec)
    server = Connection(Role.SERVER, codec=codec)
    # Bring both ends to the state in which this message is allowed.
    if kind != "hello":
        server.receive_data(client.send(ALICE))
        assert server.next_event() == ALICE
    if kind not in ("hello", "welcome"):
        client.receive_data(server.send(WELCOME))
        assert client.next_event() == WELCOME
    sender, receiver = (client, server) if vector["direction"] == "c2s" else (server, client)
    assert sender.send(message) == frame
    receiver.receive_data(frame)
    assert receiver.next_event() == message


# --- invalid.json -------------------------------------------------------------------------------------


def server_codec(vector: dict[str, Any]) -> Codec:
    """The codec a server decodes client payloads with: it counts their values (§4.2, §4.3)."""
    return get_codec(vector["codec"], max_objects=MAX_PAYLOAD_OBJECTS)


def server_connection(vector: dict[str, Any]) -> Connection:
    codec = server_codec(vector)
    connection = Connection(Role.SERVER, codec=codec)
    if vector["state"] == "active":
        connection.receive_data(encode_message(codec, ALICE))
        assert connection.next_event() == ALICE
        connection.send(WELCOME)
    assert connection.state is (State.ACTIVE if vector["state"] == "active" else State.AWAIT_HELLO)
    return connection


def refusal(vector: dict[str, Any], chunks: list[bytes]) -> RemoteProtocolError | Message:
    """Feed ``chunks``; the first error raised, or the first message (a hello to be judged by the room)."""
    connection = server_connection(vector)
    for chunk in chunks:
        connection.receive_data(chunk)
        try:
            event = connection.next_event()
        except RemoteProtocolError as exc:
            return exc
        if event is not NEED_DATA:
            assert isinstance(event, Message), event
            return event
    raise AssertionError("the input was accepted without complaint")


def check_refusal(vector: dict[str, Any], outcome: RemoteProtocolError | Message) -> None:
    if vector["error"] == ErrorCode.NAME_INVALID:
        # The name rules belong to the room (§6.1).
        assert isinstance(outcome, Hello)
        with pytest.raises(RemoteProtocolError) as info:
            Room[int]().join(1, outcome.name, "192.0.2.1")
        outcome = info.value
    assert isinstance(outcome, RemoteProtocolError)
    assert (outcome.code.value, outcome.fatal) == (vector["error"], vector["fatal"])
    assert FATAL[outcome.code] is vector["fatal"]


@pytest.mark.parametrize("vector", vectors("invalid.json"))
def test_invalid_vector_fed_whole_to_a_server_connection(vector: dict[str, Any]) -> None:
    check_refusal(vector, refusal(vector, [bytes.fromhex(vector["hex"])]))


@pytest.mark.parametrize("vector", vectors("invalid.json"))
def test_invalid_vector_fed_one_byte_at_a_time_to_a_server_connection(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    check_refusal(vector, refusal(vector, [data[i : i + 1] for i in range(len(data))]))


@pytest.mark.parametrize("vector", vectors("invalid.json"))
def test_invalid_vector_through_the_server_rules(vector: dict[str, Any]) -> None:
    codec = server_codec(vector)
    core = ServerRules(codec, server_name="test/1")
    client = 1
    core.connect(client, "192.0.2.1")
    if vector["state"] == "active":
        [welcome, _] = core.receive(client, encode_message(codec, ALICE))
        assert isinstance(welcome, Send)
    actions = core.receive(client, bytes.fromhex(vector["hex"]))
    # The sender is the only member, so it alone hears anything: exactly one error frame.
    [send] = [action for action in actions if isinstance(action, Send) and client in action.to]
    assert list(send.to) == [client]
    payload = parse_frame(send.data)
    assert len(payload) <= core.max_frame
    error = from_wire(codec.decode(payload), SERVER_MESSAGES)
    assert isinstance(error, Error)
    assert (error.code, error.fatal) == (vector["error"], vector["fatal"])
    closes = [action for action in actions if isinstance(action, Close)]
    if vector["fatal"]:
        assert closes == [Close(client, flush=True)]
        assert client not in core
    else:
        assert closes == []
        assert client in core


# --- names.json ----------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", vectors("names.json"))
def test_names_vector_against_the_room_and_the_keys(vector: dict[str, Any]) -> None:
    room: Room[int] = Room()
    if vector["member"] is not None:
        room.join(1, vector["member"], "192.0.2.1")
    name = vector["name"]
    if vector["error"] is None:
        assert room.join(2, name, "192.0.2.2").name == name
    else:
        with pytest.raises(RemoteProtocolError) as info:
            room.join(2, name, "192.0.2.2")
        assert (info.value.code, info.value.fatal) == (vector["error"], False)
    if vector["error"] == ErrorCode.NAME_INVALID:
        assert name_problem(name) is not None
        assert (vector["key"], vector["skeleton"]) == (None, None)
    else:
        assert name_problem(name) is None
        assert (name_key(name), name_skeleton(name)) == (vector["key"], vector["skeleton"])


@pytest.mark.parametrize("codec", list(CodecName))
@pytest.mark.parametrize("vector", vectors("names.json"))
def test_names_vector_through_the_server_rules(vector: dict[str, Any], codec: CodecName) -> None:
    server = get_codec(codec, max_objects=MAX_PAYLOAD_OBJECTS)
    core = ServerRules(server, server_name="test/1")
    if vector["member"] is not None:
        member = 1
        core.connect(member, "192.0.2.1")
        core.receive(member, encode_message(server, Hello(vector["member"])))
    client = 2
    core.connect(client, "192.0.2.2")
    actions = core.receive(client, encode_message(server, Hello(vector["name"])))
    [reply] = [a for a in actions if isinstance(a, Send) and list(a.to) == [client] and a.exclude is None]
    answer = from_wire(server.decode(parse_frame(reply.data)), SERVER_MESSAGES)
    if vector["error"] is None:
        assert isinstance(answer, Welcome) and answer.name == vector["name"]
    else:
        assert isinstance(answer, Error)
        assert (answer.code, answer.fatal) == (vector["error"], False)
        assert answer.message.isprintable()


def test_names_cover_every_look_alike_and_invisible_name_of_the_issue() -> None:
    by_name = {(v["member"], v["name"]): v["error"] for v in document("names.json")["vectors"]}
    assert by_name[("alice", "\u0430lice")] == ErrorCode.NAME_TAKEN
    for name in ("alice\ufe0f", "alice\u034f", "\u3164", "\u2800", "\uffa0", "\u115f", "\u1160"):
        assert by_name[(None, name)] == ErrorCode.NAME_INVALID, ascii(name)
    invalid = {bytes.fromhex(v["hex"]) for v in document("invalid.json")["vectors"]}
    for name in ("alice\ufe0f", "alice\u034f", "\u3164", "\u2800", "\uffa0"):
        for codec in CodecName:
            assert encode_message(get_codec(codec), Hello(name)) in invalid, (codec, ascii(name))
