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
#: Reads shorter than this are gathered into one part until it holds _GATHERED octets: a
#: bytes object per octet of a trickled frame would cost its 33-octet header for each.
_SHORT_READ = 4096
_GATHERED = 65536


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

    What it holds is what it was fed and no more: reads wait as they came until they
    complete the frame in front of them, and are then joined once, so a server's memory for
    the unfinished input it counts against ``max_total_input`` (§14.2) is those octets, not a
    growing buffer's spare room, and feeding many reads before asking for frames costs no
    copy per read.
    """

    __slots__ = ("_buffer", "_failed", "_parts", "_parts_size", "_start", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if not 0 <= max_frame <= MAX_WIRE_LENGTH:
            raise ValueError(f"max_frame must be within 0..{MAX_WIRE_LENGTH}")
        self.max_frame = max_frame
        # The unconsumed bytes are _buffer from _start (each payload one slice of it), then
        # the reads in _parts, which are joined behind it once they complete its front frame.
        self._buffer = b""
        self._start = 0
        self._parts: list[bytes | bytearray] = []
        self._parts_size = 0
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes received that no returned frame has consumed yet."""
        return len(self._buffer) - self._start + self._parts_size

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if self._failed or not data:
            return
        if self._start == len(self._buffer) and not self._parts:
            self._buffer = bytes(data)  # no copy for bytes, which is what sockets return
            self._start = 0
            return
        parts = self._parts
        if len(data) >= _SHORT_READ:
            parts.append(bytes(data))
        elif parts and type(last := parts[-1]) is bytearray:
            last += data
            if len(last) >= _GATHERED:
                parts[-1] = bytes(last)  # exactly its size: a grown bytearray keeps spare room
        else:
            parts.append(bytearray(data))
        self._parts_size += len(data)

    def _join(self) -> bool:
        """Join the waiting reads to the buffer once they complete the frame at its front (its
        header, while that is incomplete; at once for an oversized one, so that it is seen)."""
        if not self._parts:
            return False
        buffer, start = self._buffer, self._start
        available = len(buffer) - start
        wanted = HEADER_SIZE
        if available >= HEADER_SIZE:
            (length,) = _unpack_header(buffer, start)
            wanted = 0 if length > self.max_frame else HEADER_SIZE + length
        if available + self._parts_size < wanted:
            return False
        self._buffer = b"".join([memoryview(buffer)[start:], *self._parts])
        self._start = 0
        self._parts = []
        self._parts_size = 0
        return True

    def frames(self) -> list[bytes]:
        """Every complete payload buffered now, in order: ``next_frame`` until ``None``, in one call.

        An oversized header ends the list; the call that meets it first raises, as
        ``next_frame`` does.
        """
        payloads: list[bytes] = []
        while True:
            buffer = self._buffer
            start = self._start
            available = len(buffer)
            while available - start >= HEADER_SIZE:
                (length,) = _unpack_header(buffer, start)
                if length > self.max_frame:
                    if payloads:
                        self._start = start
                        return payloads  # they come first; the next call raises
                    self._fail(length)
                payload_start = start + HEADER_SIZE
                end = payload_start + length
                if end > available:
                    break
                payloads.append(buffer[payload_start:end])
                start = end
            self._start = start
            if not self._join():
                break
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
        while True:
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
                    return buffer[payload_start:end]
            if not self._join():
                break
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
        self._parts = []
        self._parts_size = 0
        raise RemoteProtocolError(
            ErrorCode.FRAME_TOO_LARGE, f"frame of {length} bytes exceeds max_frame {self.max_frame}"
        )

    def _compact(self) -> None:
        # Out of complete frames: keep the partial one only, so the buffer holds one frame at
        # most (reads still waiting copy it when they are joined, so it is not copied now).
        start = self._start
        if start == len(self._buffer):
            self._buffer = b""
            self._start = 0
        elif start and not self._parts:
            self._buffer = self._buffer[start:]
            self._start = 0
