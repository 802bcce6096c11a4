"""The chat wire protocol v1, sans I/O (spec/PROTOCOL.md).

Bytes in, events out; messages in, bytes out. Nothing here opens a socket, so the same
code serves both reference servers, the client and the conformance suite.
"""

__version__ = "0.1.0"

from .codecs import Codec, MsgpackCodec, PickleCodec, RestrictedUnpickler, get_codec
from .connection import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    Event,
    NeedData,
    Role,
    State,
    decode_message,
    encode_message,
)
from .constants import CodecName, ErrorCode, LeaveReason
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .frame import FRAME, FrameDecoder, build_frame, encode_frame, parse_frame
from .messages import (
    CLIENT_MESSAGES,
    SERVER_MESSAGES,
    Error,
    Hello,
    Joined,
    Left,
    Member,
    Message,
    Ping,
    Pong,
    Relayed,
    Roster,
    Say,
    Shutdown,
    Welcome,
    Who,
    from_wire,
)

__all__ = [
    "CLIENT_MESSAGES",
    "FRAME",
    "NEED_DATA",
    "SERVER_MESSAGES",
    "Codec",
    "CodecName",
    "Connection",
    "ConnectionClosed",
    "Error",
    "ErrorCode",
    "Event",
    "FrameDecoder",
    "Hello",
    "Joined",
    "LeaveReason",
    "Left",
    "LocalProtocolError",
    "Member",
    "Message",
    "MsgpackCodec",
    "NeedData",
    "PickleCodec",
    "Ping",
    "Pong",
    "ProtocolError",
    "Relayed",
    "RemoteProtocolError",
    "RestrictedUnpickler",
    "Role",
    "Roster",
    "Say",
    "Shutdown",
    "State",
    "Welcome",
    "Who",
    "build_frame",
    "decode_message",
    "encode_frame",
    "encode_message",
    "from_wire",
    "get_codec",
    "parse_frame",
]
