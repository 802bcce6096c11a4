"""What the load generator says and expects on each kind of peer: chat frames or Redis RESP.

Every delivery is accounted for by parsing, never by estimating from byte counts. Parsing
must stay far cheaper than what it measures, so a delivery whose bytes are known in advance
is matched by comparing whole runs of them at once (``bytes.startswith`` is a ``memcmp``), and
one with a timestamp in it by its fixed prefix and length; anything else goes through a
complete parser of the wire format.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import msgpack

from protocol import Hello, Relayed, Say, encode_message, get_codec

_HEADER = struct.Struct(">I")
_MSGPACK = get_codec("msgpack")

#: Chat peers see every generator connection from this address (§8.3).
HOST = "127.0.0.1"
#: The Redis channel every subscriber listens on.
CHANNEL = b"chat"
#: Width of the decimal send time (``time.perf_counter_ns``) at the start of a stamped text.
STAMP_DIGITS = 20
#: Frames compared per ``startswith`` when counting runs of identical deliveries.
_RUN_LENGTHS = (256, 16)


class Wire(ABC):
    """One peer protocol, as far as the benchmark needs it."""

    name: str

    @abstractmethod
    def join(self, client: str, *, publisher: bool) -> bytes:
        """What a subscriber or a publisher sends first."""

    @abstractmethod
    def publish(self, publisher: str, text: bytes) -> bytes:
        """One message from ``publisher``."""

    @abstractmethod
    def delivery(self, publisher: str, text: bytes) -> bytes:
        """The exact bytes a subscriber receives for that message."""

    def stamped_publish(self, publisher: str, size: int) -> tuple[bytes, bytes]:
        """``(head, tail)``: ``head + stamp + tail`` publishes a :func:`stamped_text`."""
        text = stamped_text(size, 0)
        whole = self.publish(publisher, text)
        at = whole.rindex(text)
        return whole[:at], whole[at + STAMP_DIGITS :]

    @abstractmethod
    def unit_end(self, data: bytes | bytearray, start: int) -> int | None:
        """Where the protocol unit (frame, RESP value) at ``start`` ends; ``None`` if incomplete."""

    @abstractmethod
    def is_joined(self, unit: bytes) -> bool:
        """Whether ``unit`` confirms the join (a welcome, a subscribe confirmation)."""

    def reply_end(self, data: bytes | bytearray, start: int) -> int | None:
        """Where a publisher's reply at ``start`` ends (RESP replies; chat sends none but notices)."""
        return self.unit_end(data, start)


class ChatWire(Wire):
    """This project's protocol (spec/PROTOCOL.md), msgpack codec."""

    name = "chat"

    def join(self, client: str, *, publisher: bool) -> bytes:
        return encode_message(_MSGPACK, Hello(client))

    def publish(self, publisher: str, text: bytes) -> bytes:
        return encode_message(_MSGPACK, Say(text.decode("ascii")))

    def delivery(self, publisher: str, text: bytes) -> bytes:
        return encode_message(_MSGPACK, Relayed(publisher, HOST, text.decode("ascii")))

    def unit_end(self, data: bytes | bytearray, start: int) -> int | None:
        if len(data) - start < 4:
            return None
        end: int = start + 4 + _HEADER.unpack_from(data, start)[0]
        return end if end <= len(data) else None

    def is_joined(self, unit: bytes) -> bool:
        message = msgpack.unpackb(unit[4:], raw=False)
        if isinstance(message, dict) and message.get("type") == "error":
            raise RuntimeError(f"the server refused a join: {message}")
        return isinstance(message, dict) and message.get("type") == "welcome"


def _resp_command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class RedisWire(Wire):
    """Redis pub/sub over RESP2: SUBSCRIBE, PUBLISH, and the ``message`` pushes."""

    name = "redis"

    def join(self, client: str, *, publisher: bool) -> bytes:
        # A subscribed connection may not publish, so a publisher only checks the link.
        return _resp_command(b"PING") if publisher else _resp_command(b"SUBSCRIBE", CHANNEL)

    def publish(self, publisher: str, text: bytes) -> bytes:
        return _resp_command(b"PUBLISH", CHANNEL, text)

    def delivery(self, publisher: str, text: bytes) -> bytes:
        return _resp_command(b"message", CHANNEL, text)

    def unit_end(self, data: bytes | bytearray, start: int) -> int | None:
        return _resp_end(data, start)

    def is_joined(self, unit: bytes) -> bool:
        if unit.startswith(b"-"):
            raise RuntimeError(f"redis refused: {unit!r}")
        return unit == b"+PONG\r\n" or unit.startswith(b"*3\r\n$9\r\nsubscribe\r\n")


def _resp_end(data: bytes | bytearray, start: int) -> int | None:
    """End of the RESP2 value at ``start`` (simple strings, errors, integers, bulks, arrays)."""
    line_end = data.find(b"\r\n", start)
    if line_end < 0:
        return None
    kind = data[start]
    if kind in b"+-:":
        return line_end + 2
    count = int(data[start + 1 : line_end])
    position = line_end + 2
    if kind == ord("$"):
        end = position + max(count, 0) + (2 if count >= 0 else 0)
        return end if end <= len(data) else None
    if kind != ord("*"):
        raise ValueError(f"not a RESP value: {bytes(data[start : start + 16])!r}")
    for _ in range(max(count, 0)):
        element_end = _resp_end(data, position)
        if element_end is None:
            return None
        position = element_end
    return position


WIRES: dict[str, Callable[[], Wire]] = {"chat": ChatWire, "redis": RedisWire}


def stamp(sent_ns: int) -> bytes:
    """The send time as it starts a stamped text."""
    return b"%0*d" % (STAMP_DIGITS, sent_ns)


def stamped_text(size: int, sent_ns: int) -> bytes:
    """A text of ``size`` bytes that starts with its send time."""
    if size < STAMP_DIGITS:
        raise ValueError(f"a stamped text needs at least {STAMP_DIGITS} bytes")
    return stamp(sent_ns) + b"x" * (size - STAMP_DIGITS)


class DeliveryCounter:
    """Counts the deliveries in one subscriber's byte stream; optionally times them.

    ``templates`` holds one delivery per publisher, as it will arrive; all have the same size.
    Three ways to match, from the cheapest:

    - ``exact``: every delivery is byte for byte its publisher's template, and a run of them
      is matched by one comparison with the template repeated;
    - otherwise the texts are :func:`stamped_text` and differ in their first
      ``STAMP_DIGITS`` bytes. A run of same-size deliveries is recognised by slicing every
      ``size``-th byte at the offsets where all templates agree (frame header included), so
      that a few C-level slices check thousands of deliveries;
    - ``timed``: each delivery is checked whole but for its stamp, and its latency recorded.

    Whatever does not match is parsed as one unit of the wire format (join notices,
    confirmations): counted as ``others`` and passed to ``on_other``.
    """

    __slots__ = (
        "_buffer",
        "_checks",
        "_kinds",
        "_runs",
        "_stamp_at",
        "_wire",
        "deliveries",
        "latencies_ns",
        "on_other",
        "others",
        "size",
    )

    def __init__(
        self,
        wire: Wire,
        templates: list[bytes],
        text_size: int,
        *,
        exact: bool = True,
        timed: bool = False,
        on_other: Callable[[bytes], Any] | None = None,
    ) -> None:
        sizes = {len(template) for template in templates}
        if len(sizes) != 1:
            raise ValueError("every publisher's deliveries must have the same size")
        if timed and exact:
            raise ValueError("timed deliveries carry their send time, so they cannot be exact")
        self._wire = wire
        self._buffer = bytearray()
        self.size = size = sizes.pop()
        self.deliveries = 0
        self.others = 0
        self.on_other = on_other
        self.latencies_ns: list[int] | None = [] if timed else None
        # The text is the last field of a chat frame and the last bulk of a RESP push.
        text_at = size - text_size - (2 if wire.name == "redis" else 0)
        self._stamp_at = text_at
        stamp = range(text_at, text_at + STAMP_DIGITS)
        self._runs: tuple[tuple[bytes, int], ...] = ()
        self._checks: tuple[tuple[int, bytes], ...] = ()
        if exact:
            self._kinds = tuple((template, b"") for template in templates)
            self._runs = tuple((template * n, n) for template in templates for n in _RUN_LENGTHS)
            return
        self._kinds = tuple(
            (template[:text_at], template[text_at + STAMP_DIGITS :]) for template in templates
        )
        if not timed:
            # Where every publisher's deliveries agree: the header and message type first, the
            # end of the fixed prefix (the text's own header), and the end of the delivery.
            agreed = [
                offset
                for offset in range(size)
                if offset not in stamp and len({template[offset] for template in templates}) == 1
            ]
            before = [offset for offset in agreed if offset < text_at]
            chosen = sorted(set(before[:12] + before[-4:] + agreed[-4:]))
            self._checks = tuple((offset, templates[0][offset : offset + 1]) for offset in chosen)

    def feed(self, data: bytes, now_ns: int = 0) -> None:
        """Account for ``data``; ``now_ns`` is when it arrived (for timed deliveries)."""
        buffer: bytes | bytearray
        if self._buffer:
            self._buffer += data
            buffer = self._buffer
        else:
            buffer = data
        position = self._scan(buffer, now_ns)
        if buffer is self._buffer:
            del self._buffer[:position]
        elif position < len(data):
            self._buffer += data[position:]

    def _scan(self, buffer: bytes | bytearray, now_ns: int) -> int:
        size = self.size
        available = len(buffer)
        position = 0
        count = 0
        latencies = self.latencies_ns
        stamp_at = self._stamp_at
        resume_after = 0  # after a failed run check, match one by one up to here
        while position < available:
            for run, frames in self._runs:
                while buffer.startswith(run, position):
                    position += len(run)
                    count += frames
            if self._checks and position >= resume_after:
                frames = (available - position) // size
                if frames > 1:
                    if self._uniform(buffer, position, frames):
                        position += frames * size
                        count += frames
                        continue
                    resume_after = position + frames * size
            for prefix, suffix in self._kinds:
                if (
                    buffer.startswith(prefix, position)
                    and position + size <= available
                    and buffer.startswith(suffix, position + size - len(suffix))
                ):
                    if latencies is not None:
                        stamp = position + stamp_at
                        latencies.append(now_ns - int(buffer[stamp : stamp + STAMP_DIGITS]))
                    position += size
                    count += 1
                    break
            else:
                end = self._wire.unit_end(buffer, position)
                if end is None:
                    break
                self.others += 1
                if self.on_other is not None:
                    self.on_other(bytes(buffer[position:end]))
                position = end
        self.deliveries += count
        return position

    def _uniform(self, buffer: bytes | bytearray, position: int, frames: int) -> bool:
        """Whether ``frames`` deliveries follow ``position`` back to back (every check holds)."""
        end = position + frames * self.size
        size = self.size
        return all(
            buffer[position + offset : end : size].count(value) == frames for offset, value in self._checks
        )
