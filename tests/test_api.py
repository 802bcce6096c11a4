"""The public faces: protocol's top level is the wire layer only, protocol.server the framework."""

from __future__ import annotations

import protocol
import protocol.server

WIRE = {
    # events and the connection
    "Connection", "ConnectionClosed", "Event", "NEED_DATA", "NeedData", "Role", "State",
    "Message", "CLIENT_MESSAGES", "SERVER_MESSAGES",
    "Hello", "Say", "Who", "Ping", "Welcome", "Joined", "Relayed", "Left", "Member", "Roster",
    "Pong", "Error", "Shutdown",
    # codecs, framing, encoding
    "Codec", "CodecName", "MsgpackCodec", "PickleCodec", "get_codec",
    "FrameDecoder", "encode_frame", "encode_message", "decode_message",
    # errors and codes
    "ProtocolError", "LocalProtocolError", "RemoteProtocolError", "ErrorCode", "LeaveReason",
}  # fmt: skip


def test_the_top_level_is_the_wire_layer_and_nothing_else() -> None:
    assert set(protocol.__all__) == WIRE
    for name in protocol.__all__:
        assert getattr(protocol, name) is not None
    assert isinstance(protocol.__version__, str)


def test_the_server_framework_lives_in_protocol_server() -> None:
    for name in ("ServerCore", "ServerRules", "Outbox", "Disposal", "Room", "Seat", "Send", "Close"):
        assert name in protocol.server.__all__
        assert not hasattr(protocol, name), f"{name} leaked into protocol's top level"


def test_decode_message_inverts_encode_message() -> None:
    codec = protocol.get_codec("msgpack")
    frame = protocol.encode_message(codec, protocol.Hello("alice"))
    decoder = protocol.FrameDecoder()
    decoder.feed(frame)
    payload = decoder.next_frame()
    assert payload is not None
    assert protocol.decode_message(codec, payload, protocol.CLIENT_MESSAGES) == protocol.Hello("alice")
