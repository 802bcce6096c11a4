"""A blocking test peer that records every byte it exchanges.

It frames and decodes with the protocol package but keeps no client state machine, so a
case can send anything (garbage, oversized headers, messages out of order) and see
exactly what the server answers. Every wait is bounded; a timeout raises
:class:`WireTimeout` carrying the transcript.
"""

from __future__ import annotations

import itertools
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from protocol import (
    SERVER_MESSAGES,
    Codec,
    Error,
    FrameDecoder,
    Hello,
    Message,
    MsgpackCodec,
    Ping,
    Pong,
    ProtocolError,
    Welcome,
    encode_frame,
    from_wire,
)
from protocol.constants import MAX_WIRE_LENGTH

DEFAULT_TIMEOUT = 5.0
_tokens = itertools.count(1)


@dataclass(frozen=True, slots=True)
class WireRecord:
    """One chunk sent or received, with when and what it decoded to."""

    at: float
    direction: str  # "send" or "recv"
    data: bytes
    note: str = ""

    def render(self, start: float) -> str:
        arrow = ">>" if self.direction == "send" else "<<"
        text = f"{self.at - start:9.4f} {arrow} {self.data[:96].hex(' ')}"
        if len(self.data) > 96:
            text += f" ... ({len(self.data)} bytes)"
        if self.note:
            text += f"\n          {self.note}"
        return text


@dataclass
class Transcript:
    """Everything every peer of one case exchanged, in time order."""

    start: float = field(default_factory=time.monotonic)
    records: list[tuple[str, WireRecord]] = field(default_factory=list)

    def add(self, peer: str, record: WireRecord) -> None:
        self.records.append((peer, record))

    def render(self) -> str:
        return "\n".join(f"[{peer}] {record.render(self.start)}" for peer, record in self.records)


class WireTimeout(AssertionError):
    """Nothing matching arrived in time."""


class PeerClosed(AssertionError):
    """The server closed the connection while a message was expected."""


class WirePeer:
    """One TCP connection to the server under test."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        codec: Codec | None = None,
        label: str = "peer",
        transcript: Transcript | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_frame: int = MAX_WIRE_LENGTH,
    ) -> None:
        self.codec: Codec = codec if codec is not None else MsgpackCodec()
        self.label = label
        self.transcript = transcript if transcript is not None else Transcript()
        self.timeout = timeout
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._decoder = FrameDecoder(max_frame)
        self.inbox: list[Message | dict[str, Any]] = []
        self.closed = False

    # --- sending ---------------------------------------------------------------------

    def send_raw(self, data: bytes, note: str = "") -> None:
        self.transcript.add(self.label, WireRecord(time.monotonic(), "send", data, note))
        self.sock.sendall(data)

    def send_value(self, value: dict[str, Any]) -> None:
        """Encode any map (valid or not) and send it framed."""
        self.send_raw(encode_frame(self.codec.encode(value)), repr(value))

    def send(self, message: Message) -> None:
        self.send_value(message.to_wire())

    # --- receiving -------------------------------------------------------------------

    def _read(self, deadline: float) -> bool:
        """Read once; False on end of stream (FIN or RST)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WireTimeout(f"{self.label}: timed out\n{self.transcript.render()}")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 16)
        except TimeoutError:
            raise WireTimeout(f"{self.label}: timed out\n{self.transcript.render()}") from None
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        now = time.monotonic()
        if not data:
            self.closed = True
            self.transcript.add(self.label, WireRecord(now, "recv", b"", "end of stream"))
            return False
        self._decoder.feed(data)
        notes = []
        while (payload := self._decoder.next_frame()) is not None:
            value = self.codec.decode(payload)
            try:
                message: Message | dict[str, Any] = from_wire(value, SERVER_MESSAGES)
            except ProtocolError:
                message = value
            self.inbox.append(message)
            notes.append(repr(message))
        self.transcript.add(self.label, WireRecord(now, "recv", data, "; ".join(notes)))
        return True

    def expect(
        self, match: Callable[[Message | dict[str, Any]], bool] | type[Message], timeout: float | None = None
    ) -> Any:
        """Return (and remove) the first received message that matches; wait for it if needed."""
        predicate = (lambda m: isinstance(m, match)) if isinstance(match, type) else match
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            for index, message in enumerate(self.inbox):
                if predicate(message):
                    return self.inbox.pop(index)
            if self.closed:
                raise PeerClosed(f"{self.label}: closed while waiting\n{self.transcript.render()}")
            if not self._read(deadline):
                continue

    def next(self, timeout: float | None = None) -> Message | dict[str, Any]:
        """The next message in arrival order."""
        return self.expect(lambda _m: True, timeout)  # type: ignore[no-any-return]

    def barrier(self, timeout: float | None = None) -> list[Message | dict[str, Any]]:
        """Ping and wait for its pong; return everything that arrived before it, in order."""
        token = f"barrier-{next(_tokens)}"
        self.send(Ping(token))
        self.expect(lambda m: isinstance(m, Pong) and m.token == token, timeout)
        before, self.inbox = self.inbox, []
        return before

    def join(self, name: str, timeout: float | None = None) -> Welcome:
        """Send hello and return the welcome; fails on anything else."""
        self.send(Hello(name))
        reply = self.expect(lambda m: isinstance(m, Welcome | Error), timeout)
        if not isinstance(reply, Welcome):
            raise AssertionError(
                f"{self.label}: hello {name!r} refused: {reply!r}\n{self.transcript.render()}"
            )
        return reply

    def wait_closed(self, timeout: float | None = None) -> list[Message | dict[str, Any]]:
        """Read until the server closes; return what arrived. FIN and RST both count."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while not self.closed:
            self._read(deadline)
        before, self.inbox = self.inbox, []
        return before

    def half_close(self) -> None:
        self.transcript.add(self.label, WireRecord(time.monotonic(), "send", b"", "FIN (shutdown SHUT_WR)"))
        self.sock.shutdown(socket.SHUT_WR)

    def reset(self) -> None:
        """Close with RST (SO_LINGER 0), as a crashed peer would."""
        self.transcript.add(self.label, WireRecord(time.monotonic(), "send", b"", "RST"))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
        self.closed = True

    def close(self) -> None:
        self.sock.close()
        self.closed = True

    def __enter__(self) -> WirePeer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
