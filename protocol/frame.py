"""Framing (spec/PROTOCOL.md §3): ``length:uint32be payload[length]``.

``FRAME`` is the normative definition. It is used to build and parse complete frames only:
construct's ``parse_stream`` cannot resume on partial input and its compiled parsers skip
length checks, so network bytes go through :class:`FrameDecoder`, a hand-written
incremental reader that the tests cross-check against ``FRAME`` (same bytes out, same
values in, same rejections).
"""

from __future__ import annotations

import struct
from typing import NoReturn

import construct as cs

from .constants import DEFAULT_MAX_FRAME, HEADER_SIZE, MAX_WIRE_LENGTH, ErrorCode
from .errors import LocalProtocolError, RemoteProtocolError

FRAME = cs.Struct(
    "length" / cs.Rebuild(cs.Int32ub, cs.len_(cs.this.payload)),
    "payload" / cs.Bytes(cs.this.length),
)

_HEADER = struct.Struct(">I")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from


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
    return _pack_header(len(payload)) + payload


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
        # The unconsumed bytes start at _start. While no partial frame is pending, _buffer is
        # the bytes object last fed, and each payload is one slice of it (a single copy);
        # a partial frame is carried over into a bytearray that later reads extend.
        self._buffer: bytes | bytearray = b""
        self._start = 0
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes received that no returned frame has consumed yet."""
        return len(self._buffer) - self._start

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if self._failed or not data:
            return
        buffer = self._buffer
        if self._start == len(buffer):
            self._buffer = bytes(data)  # no copy for bytes, which is what sockets return
            self._start = 0
        elif type(buffer) is bytearray:
            buffer += data
        else:
            self._buffer = bytearray(buffer[self._start :]) + data
            self._start = 0

    def frames(self) -> list[bytes]:
        """Every complete payload buffered now, in order: ``next_frame`` until ``None``, in one call.

        An oversized header ends the list; the call that meets it first raises, as
        ``next_frame`` does.
        """
        payloads: list[bytes] = []
        buffer = self._buffer
        start = self._start
        available = len(buffer)
        while available - start >= HEADER_SIZE:
            (length,) = _unpack_header(buffer, start)
            if length > self.max_frame:
                if payloads:
                    break  # they come first; the next call raises
                self._fail(length)
            payload_start = start + HEADER_SIZE
            end = payload_start + length
            if end > available:
                break
            if type(buffer) is bytes:
                payloads.append(buffer[payload_start:end])
            else:
                payloads.append(bytes(memoryview(buffer)[payload_start:end]))
            start = end
        self._start = start
        if self._failed:
            raise RemoteProtocolError(
                ErrorCode.FRAME_TOO_LARGE, "stream already failed on an oversized frame"
            )
        self._compact()
        return payloads

    def next_frame(self) -> bytes | None:
        """Return the next complete payload, or ``None`` until more bytes arrive.

        Raises :class:`RemoteProtocolError` (``frame_too_large``) on an oversized header;
        the stream cannot be resynchronised after it, so every later call raises it again.
        """
        buffer = self._buffer
        start = self._start
        if len(buffer) - start >= HEADER_SIZE:
            (length,) = _unpack_header(buffer, start)
            if length > self.max_frame:
                self._fail(length)
            payload_start = start + HEADER_SIZE
            end = payload_start + length
            if end <= len(buffer):
                self._start = end
                if type(buffer) is bytes:
                    return buffer[payload_start:end]
                return bytes(memoryview(buffer)[payload_start:end])
        if self._failed:
            raise RemoteProtocolError(
                ErrorCode.FRAME_TOO_LARGE, "stream already failed on an oversized frame"
            )
        self._compact()
        return None

    def _fail(self, length: int) -> NoReturn:
        self._failed = True
        self._buffer = b""
        self._start = 0
        raise RemoteProtocolError(
            ErrorCode.FRAME_TOO_LARGE, f"frame of {length} bytes exceeds max_frame {self.max_frame}"
        )

    def _compact(self) -> None:
        # Out of complete frames: keep the partial one only, so the buffer holds one frame at most.
        start = self._start
        if start == len(self._buffer):
            self._buffer = b""
            self._start = 0
        elif start and type(self._buffer) is bytearray:
            del self._buffer[:start]
            self._start = 0
