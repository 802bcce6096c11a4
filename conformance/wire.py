"""A blocking test peer that records every byte it exchanges.

It frames and decodes with the protocol package but keeps no client state machine, so a
case can send anything (garbage, oversized headers, messages out of order) and see
exactly what the server answers. Every wait is bounded; a timeout raises
:class:`WireTimeout` saying what was expected and what came instead.

Whatever the server sends is checked against the rules every server frame must follow,
whatever the case is about: each payload decodes in the server's codec, and no frame is
longer than the ``max_frame`` the server advertised (§3.2). A breach raises
:class:`ServerViolation` at once.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from impl_select.tls import TlsFailure, TlsSession
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
)
from protocol.constants import MAX_WIRE_LENGTH, CodecName
from protocol.messages import from_wire

DEFAULT_TIMEOUT = 5.0
#: Linux's TCP_CLOSE, the first octet of ``struct tcp_info``: the connection is over.
_TCP_CLOSE = 7
_tokens = itertools.count(1)


class HandshakeFailed(AssertionError):
    """The server ended or refused the TLS handshake of a connection the suite opened."""


@dataclass(frozen=True)
class Security:
    """How the run reaches the server (§16.1 rule 5): over TLS with this context (and server
    name), and presenting this token in every hello."""

    tls: ssl.SSLContext | None = None
    server_name: str | None = None
    token: str | None = None
    #: A name the server reserves to a token other than ``token`` (AUTH-RESERVED-NAME).
    reserved_name: str | None = None


PLAIN = Security()


def client_hello() -> bytes:
    """The first flight of a TLS client: a real ClientHello, for cases that stall inside one."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    session = TlsSession(context, server_side=False, server_hostname="localhost")
    session.start()
    return session.take_output()


def _hidden(value: Any) -> Any:
    """``value`` for a transcript: a hello's token is a secret (§17.3)."""
    if isinstance(value, dict) and value.get("type") == "hello" and "token" in value:
        return {**value, "token": "<token>"}
    return value


#: What a received item is: a typed message, or the decoded value when it is not a valid server message.
Received = Message | dict[str, Any] | Any
Matcher = Callable[[Any], bool] | type[Message]


def _holds_bytes(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, bytes | bytearray):
            return True
        if isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            pending.extend(item)
    return False


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


@dataclass(frozen=True, slots=True)
class WireRecord:
    """One chunk sent or received, with when and what it decoded to."""

    at: float
    direction: str  # "send" or "recv"
    data: bytes
    note: str = ""

    def render(self, start: float) -> str:
        arrow = {"send": ">>", "recv": "<<"}.get(self.direction, "--")
        text = f"{self.at - start:9.4f} {arrow} {self.data[:96].hex(' ')}"
        if len(self.data) > 96:
            text += f" ... ({len(self.data)} bytes)"
        if self.note:
            text += f"\n          {_shorten(self.note, 600)}"
        return text


@dataclass
class Transcript:
    """Everything every peer of one case exchanged, in time order.

    ``embed`` puts the rendered transcript into the text of every failure a peer raises;
    a runner that attaches the transcript to its report by itself turns it off.
    """

    start: float = field(default_factory=time.monotonic)
    records: list[tuple[str, WireRecord]] = field(default_factory=list)
    embed: bool = True

    def add(self, peer: str, record: WireRecord) -> None:
        self.records.append((peer, record))

    def note(self, text: str) -> None:
        """Record an event of the case itself (a signal sent, a process exit, ...)."""
        self.add("case", WireRecord(time.monotonic(), "note", b"", text))

    def render(self, head: int = 120, tail: int = 240) -> str:
        lines = [f"[{peer}] {record.render(self.start)}" for peer, record in self.records]
        if len(lines) > head + tail:
            skipped = len(lines) - head - tail
            lines = [*lines[:head], f"... {skipped} records left out ...", *lines[-tail:]]
        return "\n".join(lines)

    def attach(self) -> str:
        return f"\n{self.render()}" if self.embed else ""


class WireTimeout(AssertionError):
    """Nothing matching arrived in time."""


class PeerClosed(AssertionError):
    """The server closed the connection while a message was expected."""


class ServerViolation(AssertionError):
    """The server sent something no server may send (undecodable payload, oversized frame)."""


class WirePeer:
    """One TCP connection to the server under test.

    ``rcvbuf`` shrinks the socket's receive buffer before connecting, so a peer that stops
    reading pushes back on the server quickly (slow-consumer cases).
    """

    def __init__(
        self,
        address: tuple[str, int],
        *,
        codec: Codec | None = None,
        label: str = "peer",
        transcript: Transcript | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_frame: int = MAX_WIRE_LENGTH,
        rcvbuf: int | None = None,
        security: Security = PLAIN,
        source: str | None = None,
    ) -> None:
        self.codec: Codec = codec if codec is not None else MsgpackCodec()
        self.label = label
        self.transcript = transcript if transcript is not None else Transcript()
        self.timeout = timeout
        self.security = security
        self.tls: TlsSession | None = None
        self.sock = self._connect(address, rcvbuf, source)
        if security.tls is not None:
            self._handshake(security.tls, security.server_name or address[0])
        self._decoder = FrameDecoder(max_frame)
        #: Received messages not yet taken by :meth:`expect`, in arrival order.
        self.inbox: list[Received] = []
        #: Every payload received, raw and decoded, in arrival order (for byte-level checks).
        self.payloads: list[bytes] = []
        self.values: list[Any] = []
        #: The ``max_frame`` of the server's welcome, once one arrived (§3.2: binds the server).
        self.advertised_max_frame: int | None = None
        #: The welcome :meth:`join` received.
        self.welcome: Welcome | None = None
        self.closed = False
        #: How the server ended the stream: "FIN" or "RST" (both count as closed).
        self.closed_by = ""

    def _connect(self, address: tuple[str, int], rcvbuf: int | None, source: str | None) -> socket.socket:
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if source is not None:
                sock.bind((source, 0))  # another source address (127.0.0.2 is loopback too)
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(self.timeout)
            sock.connect((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            sock.close()
            raise
        self.transcript.add(
            self.label, WireRecord(time.monotonic(), "note", b"", f"connected to {host}:{port}")
        )
        return sock

    def _handshake(self, context: ssl.SSLContext, server_name: str) -> None:
        """The TLS handshake, bounded by the peer's timeout; fails the case if it fails."""
        tls = self.tls = TlsSession(context, server_side=False, server_hostname=server_name)
        deadline = time.monotonic() + self.timeout
        try:
            tls.start()
            while not tls.handshaken:
                self.sock.sendall(tls.take_output())
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                self.sock.settimeout(remaining)
                tls.receive(self.sock.recv(1 << 16))
            self.sock.sendall(tls.take_output())
        except TlsFailure as exc:
            self.sock.close()
            raise HandshakeFailed(f"{self.label}: TLS handshake with the server failed: {exc}") from None
        except TimeoutError:
            self.sock.close()
            raise WireTimeout(f"{self.label}: no TLS handshake within {self.timeout:.1f} s") from None
        except OSError as exc:
            # A reset is as much an end of the handshake as a FIN (§14.2 rule 3 allows either).
            self.sock.close()
            raise HandshakeFailed(f"{self.label}: the server ended the TLS handshake: {exc}") from None
        self.transcript.note(f"{self.label}: TLS handshake done")

    # --- sending ---------------------------------------------------------------------

    def send_raw(self, data: bytes, note: str = "", *, tolerate_close: bool = False) -> bool:
        """Send ``data``; returns False if the server had already closed (only with ``tolerate_close``)."""
        self.transcript.add(self.label, WireRecord(time.monotonic(), "send", data, note))
        self.sock.settimeout(self.timeout)
        if self.tls is not None:
            self.tls.encrypt([data])
            data = self.tls.take_output()
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise WireTimeout(
                f"{self.label}: the server did not read {len(data)} bytes within {self.timeout:.1f} s"
                f"{self.transcript.attach()}"
            ) from None
        except OSError as exc:
            if tolerate_close:
                self.transcript.note(f"{self.label}: send failed: {exc}")
                return False
            raise PeerClosed(f"{self.label}: send failed: {exc}{self.transcript.attach()}") from None
        return True

    @staticmethod
    def frame_of(codec: Codec, value: Any) -> bytes:
        """One frame carrying ``value`` (valid message or not) in ``codec``.

        Pickle protocol 2 can express ``bytes`` only as a call of the global
        ``_codecs.encode``, which every conforming unpickler refuses (§4.3); a value holding
        bytes is therefore pickled with protocol 4, whose BINBYTES needs no global.
        """
        if codec.name == CodecName.PICKLE and _holds_bytes(value):
            return encode_frame(pickle.dumps(value, protocol=4))
        return encode_frame(codec.encode(value))

    def frame(self, value: Any) -> bytes:
        """One frame carrying ``value`` in this peer's codec; a hello map without a token
        gets the run's token, if it has one (§16.1 rule 5)."""
        token = self.security.token
        if token is not None and isinstance(value, dict) and value.get("type") == "hello":
            value = {**value, "token": token} if "token" not in value else value
        return self.frame_of(self.codec, value)

    def send_value(self, value: Any) -> None:
        """Encode any value (valid message or not) and send it framed."""
        self.send_raw(self.frame(value), _shorten(repr(_hidden(value)), 300))

    def send(self, message: Message) -> None:
        self.send_value(message.to_wire())

    def send_values(self, values: Iterable[Any]) -> None:
        """Send several frames in one write, as a client that coalesces would."""
        values = list(values)
        data = b"".join(self.frame(value) for value in values)
        shown = [_hidden(value) for value in values]
        self.send_raw(data, f"{len(values)} frames in one write: {_shorten(repr(shown), 300)}")

    # --- receiving -------------------------------------------------------------------

    def _timeout(self, what: str, waited: float) -> WireTimeout:
        pending = "; ".join(_shorten(repr(m), 200) for m in self.inbox[:20]) or "nothing"
        return WireTimeout(
            f"{self.label}: expected {what} within {waited:.1f} s; received instead: {pending}"
            f"{self.transcript.attach()}"
        )

    def _read(self, deadline: float, what: str, waited: float) -> bool:
        """Read once; False on end of stream (FIN or RST)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._timeout(what, waited)
        self.sock.settimeout(remaining)
        closed_by = "FIN"
        try:
            data = self.sock.recv(1 << 16)
        except TimeoutError:
            raise self._timeout(what, waited) from None
        except (ConnectionResetError, BrokenPipeError):
            data, closed_by = b"", "RST"
        now = time.monotonic()
        if self.tls is not None:
            plain = self._decrypt(data)
            if plain is None:
                return True  # TLS records without application data yet
            data = plain
        if not data:
            self.closed = True
            self.closed_by = closed_by
            note = "end of stream (FIN)" if closed_by == "FIN" else "connection reset (RST)"
            self.transcript.add(self.label, WireRecord(now, "recv", b"", note))
            return False
        self._decoder.feed(data)
        notes = []
        try:
            while (payload := self._decoder.next_frame()) is not None:
                notes.append(self._take(payload))
        finally:
            self.transcript.add(self.label, WireRecord(now, "recv", data, "; ".join(notes)))
        return True

    def _decrypt(self, data: bytes) -> bytes | None:
        """Ciphertext to plaintext: ``b""`` at the end of the stream (close_notify or EOF),
        ``None`` when the records held no application data."""
        assert self.tls is not None
        try:
            plain, ended = self.tls.receive(data)
        except TlsFailure as exc:
            raise ServerViolation(
                f"{self.label}: the server's TLS failed: {exc}{self.transcript.attach()}"
            ) from None
        pending = self.tls.take_output()
        if pending:
            with contextlib.suppress(OSError):
                self.sock.sendall(pending)
        if plain:
            return plain  # an end that came with it is read again with the FIN
        if ended or not data:
            return b""
        return None

    def _take(self, payload: bytes) -> str:
        limit = self.advertised_max_frame
        if limit is not None and len(payload) > limit:
            raise ServerViolation(
                f"{self.label}: the server sent a frame of {len(payload)} bytes although its welcome "
                f"advertised max_frame {limit} (§3.2){self.transcript.attach()}"
            )
        try:
            value = self.codec.decode(payload)
        except ProtocolError as exc:
            raise ServerViolation(
                f"{self.label}: the server sent a payload its own codec ({self.codec.name}) cannot "
                f"decode (§4.1): {exc.message}; payload {payload[:64].hex(' ')}{self.transcript.attach()}"
            ) from None
        try:
            message: Received = from_wire(value, SERVER_MESSAGES)
        except ProtocolError:
            message = value
        if isinstance(message, Welcome) and self.advertised_max_frame is None:
            self.advertised_max_frame = message.max_frame
        self.payloads.append(payload)
        self.values.append(value)
        self.inbox.append(message)
        return repr(message)

    def expect(self, match: Matcher, timeout: float | None = None, what: str | None = None) -> Any:
        """Return (and remove) the first received message that matches; wait for it if needed."""
        if isinstance(match, type):
            kind: type = match
            predicate: Callable[[Any], bool] = lambda m: isinstance(m, kind)  # noqa: E731
            wanted = what or str(getattr(kind, "TYPE", kind.__name__))
        else:
            predicate = match
            wanted = what or str(getattr(match, "description", "a matching message"))
        waited = timeout if timeout is not None else self.timeout
        deadline = time.monotonic() + waited
        while True:
            for index, message in enumerate(self.inbox):
                if predicate(message):
                    return self.inbox.pop(index)
            if self.closed:
                pending = "; ".join(_shorten(repr(m), 200) for m in self.inbox[:20]) or "nothing"
                raise PeerClosed(
                    f"{self.label}: expected {wanted}, but the server closed the connection "
                    f"({self.closed_by}); received instead: {pending}{self.transcript.attach()}"
                )
            self._read(deadline, wanted, waited)

    def next(self, timeout: float | None = None) -> Received:
        """The next message in arrival order."""
        return self.expect(lambda _m: True, timeout, "any message")

    def expect_error(self, code: str, fatal: bool, timeout: float | None = None) -> Error:
        """The next ``error`` frame; it must carry ``code`` and ``fatal`` (§9.1)."""
        code = str(code)
        error = self.expect(Error, timeout, f"error{{code: {code!r}, fatal: {fatal}}}")
        assert isinstance(error, Error)
        if (error.code, error.fatal) != (code, fatal):
            raise AssertionError(
                f"{self.label}: expected error{{code: {code!r}, fatal: {fatal}}}, got {error!r}"
                f"{self.transcript.attach()}"
            )
        return error

    def barrier(self, timeout: float | None = None) -> list[Received]:
        """Ping and wait for its pong; return everything that arrived before it, in order.

        The server handles one connection's frames in order and sends one connection's
        frames in the order it made them (§11), so whatever the frames sent before the ping
        caused for this peer has arrived once the pong is here.
        """
        token = f"barrier-{next(_tokens)}"
        self.send(Ping(token))
        self.expect(lambda m: isinstance(m, Pong) and m.token == token, timeout, f"pong{{token: {token!r}}}")
        before, self.inbox = self.inbox, []
        return before

    def join(self, name: str, timeout: float | None = None) -> Welcome:
        """Send hello and return the welcome; fails on anything else."""
        self.send(Hello(name))
        reply = self.expect(lambda m: isinstance(m, Welcome | Error), timeout, f"welcome for {name!r}")
        if not isinstance(reply, Welcome):
            raise AssertionError(f"{self.label}: hello {name!r} refused: {reply!r}{self.transcript.attach()}")
        self.welcome = reply
        return reply

    @property
    def name(self) -> str:
        """The name this peer joined under."""
        if self.welcome is None:
            raise AssertionError(f"{self.label} has not joined")
        return self.welcome.name

    def wait_closed(self, timeout: float | None = None) -> list[Received]:
        """Read until the server closes; return what arrived. FIN and RST both count."""
        waited = timeout if timeout is not None else self.timeout
        deadline = time.monotonic() + waited
        while not self.closed:
            self._read(deadline, "the server to close the connection", waited)
        before, self.inbox = self.inbox, []
        return before

    def expect_quiet(self, seconds: float, why: str) -> None:
        """Read for ``seconds``; anything arriving meanwhile, or the close, fails with ``why``.

        An observation window, not a wait for something to happen: what a case checks here is
        that nothing happens before a point in time (a timer that must not have fired yet).
        """
        deadline = time.monotonic() + seconds
        while not self.inbox and not self.closed:
            try:
                self._read(deadline, "silence", seconds)
            except WireTimeout:
                return
        got = "; ".join(_shorten(repr(m), 200) for m in self.inbox[:5])
        ending = f"the server closed the connection ({self.closed_by})" if self.closed else got
        raise AssertionError(f"{self.label}: {why}, but within {seconds:.2f} s came: {ending}")

    def end_after_server_fin(self, data: bytes, timeout: float | None = None) -> str:
        """The server has half-closed: send ``data``, half-close too, and see how the connection ends.

        A server closing as spec §9.4 says reads and discards ``data`` until this side's EOF;
        one that has already closed its socket with input unread has reset the connection, and
        one that closed it since usually makes its TCP answer ``data`` with RST (Linux drops
        such data silently when it comes with the acknowledgement of the server's FIN). Returns
        "" for the orderly end, else what showed the reset. On Linux the connection's TCP
        state is watched until it is over, so a reset that came is always seen.
        """
        if not self.send_raw(data, f"{len(data)} octets after the server's FIN", tolerate_close=True):
            return "sending after the server's FIN failed: the server reset the connection"
        self.transcript.add(self.label, WireRecord(time.monotonic(), "send", b"", "FIN (shutdown SHUT_WR)"))
        try:
            self._shut_write()
        except OSError as exc:
            return f"half-closing after the server's FIN failed ({exc}): the server reset the connection"
        waited = timeout if timeout is not None else self.timeout
        deadline = time.monotonic() + waited
        tcp_info = getattr(socket, "TCP_INFO", None)
        if tcp_info is not None:
            while self.sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 8)[0] != _TCP_CLOSE:
                if time.monotonic() >= deadline:
                    return f"the connection did not end within {waited:.1f} s after both sides' FIN"
                # Polls the kernel's state of this very connection: it changes as soon as the
                # other side's TCP answers, which on loopback is almost at once.
                time.sleep(0.002)
        error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self.transcript.note(f"{self.label}: reset after the server's FIN: {os.strerror(error)}")
            return f"the server's TCP answered with RST ({os.strerror(error)})"
        try:
            self.sock.settimeout(0)
            self.sock.recv(1)
        except (ConnectionResetError, BrokenPipeError) as exc:
            return f"the server's TCP answered with RST ({exc})"
        except (BlockingIOError, OSError):
            pass
        self.transcript.note(f"{self.label}: orderly end: the server read until EOF")
        return ""

    def half_close(self) -> None:
        self.transcript.add(self.label, WireRecord(time.monotonic(), "send", b"", "FIN (shutdown SHUT_WR)"))
        try:
            self._shut_write()
        except OSError as exc:
            self.transcript.note(f"{self.label}: half-close failed: {exc}")

    def _shut_write(self) -> None:
        """FIN; over TLS after close_notify (§17.2)."""
        if self.tls is not None:
            self.tls.close()
            self.sock.settimeout(self.timeout)
            self.sock.sendall(self.tls.take_output())
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
