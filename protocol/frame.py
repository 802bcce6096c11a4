"""Framing (spec/PROTOCOL.md §3): ``length:uint32be payload[length]``.

``FRAME`` is the normative definition. It is used to build and parse complete frames only:
construct's ``parse_stream`` cannot resume on partial input and its compiled parsers skip
length checks, so network bytes go through :class:`FrameDecoder`, a hand-written
incremental reader that the tests cross-check against ``FRAME`` (same bytes out, same
values in, same rejections).
"""

from __future__ import annotations

import struct

import construct as cs

from .constants import DEFAULT_MAX_FRAME, HEADER_SIZE, MAX_WIRE_LENGTH, ErrorCode
from .errors import LocalProtocolError, RemoteProtocolError

FRAME = cs.Struct(
    "length" / cs.Rebuild(cs.Int32ub, cs.len_(cs.this.payload)),
    "payload" / cs.Bytes(cs.this.length),
)

_HEADER = struct.Struct(">I")


def build_frame(payload: bytes) -> bytes:
    """Build one frame with the construct schema (the reference path)."""
    if len(payload) > MAX_WIRE_LENGTH:
        raise LocalProtocolError(ErrorCode.FRAME_TOO_LARGE, "payload longer than a uint32 can count")
    return bytes(FRAME.build({"payload": payload}))


def parse_frame(data: bytes) -> bytes:
    """Parse exactly one complete frame with the construct schema (the reference path)."""
    try:
        container = FRAME.parse(data)
    except cs.ConstructError as exc:
        raise RemoteProtocolError(ErrorCode.BAD_PAYLOAD, f"not a complete frame: {exc}") from None
    consumed = HEADER_SIZE + container.length
    if consumed != len(data):
        raise RemoteProtocolError(ErrorCode.BAD_PAYLOAD, f"{len(data) - consumed} bytes after the frame")
    return bytes(container.payload)


def encode_frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its length (the fast path; equal to :func:`build_frame`)."""
    if len(payload) > MAX_WIRE_LENGTH:
        raise LocalProtocolError(ErrorCode.FRAME_TOO_LARGE, "payload longer than a uint32 can count")
    return _HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Incremental frame reader with a bounded buffer.

    ``feed`` whatever the socket gave, then call ``next_frame`` until it returns ``None``.
    A header announcing more than ``max_frame`` bytes is rejected as soon as its 4 bytes
    are in, before any payload is kept, so the buffer never holds more than one frame plus
    one read. Frames that precede a bad header are still returned, in order, first.
    """

    __slots__ = ("_buffer", "_failed", "_start", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if not 0 <= max_frame <= MAX_WIRE_LENGTH:
            raise ValueError(f"max_frame must be within 0..{MAX_WIRE_LENGTH}")
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._start = 0
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes received that no returned frame has consumed yet."""
        return len(self._buffer) - self._start

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if not self._failed:
            self._buffer += data

    def next_frame(self) -> bytes | None:
        """Return the next complete payload, or ``None`` until more bytes arrive.

        Raises :class:`RemoteProtocolError` (``frame_too_large``) on an oversized header;
        the stream cannot be resynchronised after it, so every later call raises it again.
        """
        if self._failed:
            raise RemoteProtocolError(
                ErrorCode.FRAME_TOO_LARGE, "stream already failed on an oversized frame"
            )
        buffer = self._buffer
        start = self._start
        available = len(buffer) - start
        if available >= HEADER_SIZE:
            (length,) = _HEADER.unpack_from(buffer, start)
            if length > self.max_frame:
                self._failed = True
                buffer.clear()
                self._start = 0
                raise RemoteProtocolError(
                    ErrorCode.FRAME_TOO_LARGE, f"frame of {length} bytes exceeds max_frame {self.max_frame}"
                )
            if available - HEADER_SIZE >= length:
                payload_start = start + HEADER_SIZE
                self._start = payload_start + length
                return bytes(buffer[payload_start : self._start])
        # Out of complete frames: drop what was consumed so the buffer holds one partial frame at most.
        if start:
            del buffer[:start]
            self._start = 0
        return None
