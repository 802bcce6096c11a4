"""The chat wire protocol v1, sans I/O (spec/PROTOCOL.md).

Bytes in, events out; messages in, bytes out. Nothing here opens a socket, so the same
code serves both reference servers, the client and the conformance suite.

This top level is the wire layer: the message events, :class:`Connection`, the codecs,
framing, the errors, and :func:`encode_message` / :func:`decode_message`. The server
framework is :mod:`protocol.server`; the construct schema of a frame is
:data:`protocol.frame.FRAME`, the state tables :mod:`protocol.states`, the constants
:mod:`protocol.constants`.
"""

__version__ = "0.1.0"

from .codecs import Codec, MsgpackCodec, PickleCodec, get_codec
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
from .frame import FrameDecoder, encode_frame
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
)

__all__ = [
    "CLIENT_MESSAGES",
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
    "Role",
    "Roster",
    "Say",
    "Shutdown",
    "State",
    "Welcome",
    "Who",
    "decode_message",
    "encode_frame",
    "encode_message",
    "get_codec",
]
