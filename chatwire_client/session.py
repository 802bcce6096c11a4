"""The client's core, sans I/O: protocol events in, display lines out; user input in, bytes out.

Every protocol rule (framing, codecs, what may be sent when) is :class:`protocol.Connection`'s;
this module only decides what a person sees and what their typing means. The front ends
(:mod:`chatwire_client.interactive`, :mod:`chatwire_client.pipe`) move bytes and print lines.
"""

from __future__ import annotations

import itertools
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum

from protocol import (
    NEED_DATA,
    Codec,
    Connection,
    ConnectionClosed,
    Error,
    ErrorCode,
    Hello,
    Joined,
    Left,
    LocalProtocolError,
    Message,
    Ping,
    Pong,
    Relayed,
    RemoteProtocolError,
    Role,
    Roster,
    Say,
    Shutdown,
    State,
    Welcome,
    Who,
    encode_message,
)
from protocol.constants import HEADER_SIZE, PROTOCOL_VERSION


class ExitStatus(IntEnum):
    """The client's exit statuses (also listed by ``python -m chatwire_client --help``)."""

    OK = 0  #: the user left (/quit, Ctrl-D, Ctrl-C, end of piped input)
    CONNECTION_LOST = 1  #: the connection ended without a shutdown notice
    CANNOT_CONNECT = 2  #: no connection could be made (also: bad command line)
    NAME_REFUSED = 3  #: pipe mode: the server refused the name
    SERVER_SHUTDOWN = 4  #: the server announced its shutdown
    PROTOCOL_ERROR = 5  #: the server sent a fatal error, or broke the protocol
    TIMED_OUT = 6  #: the server did not answer in time (connect, welcome, the final pong)
    BAD_CERTIFICATE = 7  #: --tls: the server's certificate could not be verified


class Style(Enum):
    """How a line is shown: the interactive front end maps each to a colour; pipe mode prints
    what happens in the room (CHAT, NOTICE) on stdout and the rest on stderr."""

    CHAT = "chat"  #: someone else's message
    OWN = "own"  #: the echo of what this user said, once the server has taken it
    NOTICE = "notice"  #: what happens in the room: joins, departures, roster, pong, help
    STATUS = "status"  #: this client's own connection: welcome, shutdown
    ERROR = "error"  #: refusals, errors, disconnection


@dataclass(frozen=True, slots=True)
class Line:
    """One line to display; ``text`` is already safe for a terminal."""

    style: Style
    text: str


@dataclass(frozen=True, slots=True)
class Step:
    """What user input leads to: bytes for the server and lines for the screen."""

    send: bytes = b""
    lines: tuple[Line, ...] = ()


# Cc (ESC, CR, LF, DEL, C1 ...) can drive the terminal; Cf (bidi overrides, zero-width
# characters) can reorder or hide text; Zl/Zp break lines; Cs cannot even be encoded (§14.3).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def visible(text: str) -> str:
    """``text`` with every unsafe code point replaced by its Python escape, e.g. ``\\x1b``."""
    if text.isprintable():
        return text
    return "".join(
        repr(char)[1:-1] if unicodedata.category(char) in _UNSAFE_CATEGORIES else char for char in text
    )


def address(name: str, host: str) -> str:
    """``name@host``, made safe to display."""
    return f"{visible(name)}@{visible(host)}"


def _here(count: int) -> str:
    return f"{count} here"


def blank(text: str) -> bool:
    """Whether a typed or piped line is empty or only whitespace: the front ends say nothing then."""
    return not text.strip()


def _preview(text: str, limit: int = 40) -> str:
    shown = visible(text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


_DEPARTURES = {
    "quit": "left",
    "connection_lost": "lost their connection",
    "slow_consumer": "was dropped for reading too slowly",
    "error": "was disconnected after an error",
}

HELP = (
    "commands: /who lists the room, /ping measures the round trip, /quit leaves (so do Ctrl-D and Ctrl-C),",
    "/help shows this; anything else is said to the room (start a line with // to say one beginning with /)",
)


class ChatSession:
    """One chat connection as a person sees it.

    Feed received bytes to :meth:`receive` and show the lines it returns; pass typed lines to
    :meth:`command` (interactive) or :meth:`say` (piped) and send :attr:`Step.send`. The
    session is over when :attr:`status` is set; the front end then closes the connection.
    """

    def __init__(
        self,
        codec: Codec,
        *,
        echo: bool = False,
        clock: Callable[[], float] = time.monotonic,
        token: str | None = None,
        tls: bool = False,
    ) -> None:
        """``token`` is presented in every hello (a server with access control, §17.3);
        ``tls`` says whether the connection is TLS (for the hint when a TLS port hangs up)."""
        self.connection = Connection(Role.CLIENT, codec=codec)
        self._token = token
        self.echo = echo
        self.clock = clock
        self.status: ExitStatus | None = None
        self.welcome: Welcome | None = None
        #: The error that refused the latest hello; cleared by the next :meth:`hello`.
        self.refusal: Error | None = None
        self.barrier_passed = False
        self._tokens = itertools.count(1)
        self._pings: dict[str, float] = {}
        # Echoes waiting for the pong that follows their say, oldest first: (text, line).
        self._echoes: dict[str, tuple[str, Line]] = {}
        self._barrier: str | None = None
        # Set once nothing more from the server can matter: after shutdown, a fatal error,
        # end of stream, or a violation by the server. A /quit does not set it: messages
        # sent before the server sees our end of stream are still shown.
        self._stopped = False
        self._tls = tls
        self._heard = False  # any octet from the server yet

    @property
    def finished(self) -> bool:
        return self.status is not None

    @property
    def joined(self) -> bool:
        return self.welcome is not None and not self.finished

    @property
    def hello_answered(self) -> bool:
        """The latest hello was accepted or refused, or the session is over."""
        return self.joined or self.refusal is not None or self.finished

    # --- user side -----------------------------------------------------------------------

    def hello(self, name: str) -> bytes:
        """Ask to join as ``name``; wait for :attr:`joined` or :attr:`refusal` before anything else."""
        self.refusal = None
        return self.connection.send(Hello(name, self._token))

    def command(self, text: str) -> Step:
        """Interpret one line typed by the user."""
        if text.startswith("//"):
            return self.say(text[1:])
        if not text.startswith("/"):
            return Step() if blank(text) else self.say(text)
        word = text.split(maxsplit=1)[0].lower()
        if word == "/who":
            return self._send(Who())
        if word == "/ping":
            token = f"ping-{next(self._tokens)}"
            self._pings[token] = self.clock()
            return self._send(Ping(token))
        if word in ("/quit", "/exit"):
            self.quit()
            return Step()
        if word == "/help":
            return Step(lines=tuple(Line(Style.NOTICE, text) for text in HELP))
        return Step(lines=(Line(Style.ERROR, f"unknown command {visible(word)}; /help lists them"),))

    def say(self, text: str) -> Step:
        """Say ``text`` to the room, exactly as given.

        Refused here, with nothing sent, if the server could not relay it: the ``message``
        carrying it (with this member's name and host) would exceed the server's max_frame
        (§8.4). With ``echo``, a ping follows the say and the echo is shown on its pong,
        unless the server refused the say before it (it answers in order, §11).
        """
        if self.welcome is not None and self._relayed_size(text) > self.welcome.max_frame:
            return Step(lines=(Line(Style.ERROR, f"not sent: {self._too_long()}"),))
        step = self._send(Say(text))
        if self.echo and step.send and self.welcome is not None:
            me = address(self.welcome.name, self.welcome.host)
            token = f"echo-{next(self._tokens)}"
            self._echoes[token] = (text, Line(Style.OWN, f"{me}: {visible(text)}"))
            return Step(step.send + self.connection.send(Ping(token)))
        return step

    def _too_long(self) -> str:
        return f"too long for this server (at most {self.connection.send_limit} bytes per frame)"

    def _relayed_size(self, text: str) -> int:
        assert self.welcome is not None
        relayed = Relayed(self.welcome.name, self.welcome.host, text)
        try:
            return len(encode_message(self.connection.codec, relayed)) - HEADER_SIZE
        except LocalProtocolError:
            return 0  # not encodable at all: sending the say says why

    def barrier(self) -> bytes:
        """A ping whose pong sets :attr:`barrier_passed`: everything sent before it was processed."""
        self._barrier = f"barrier-{next(self._tokens)}"
        return self.connection.send(Ping(self._barrier))

    def keepalive(self) -> bytes:
        """A ping whose pong shows nothing: it only keeps the connection alive (spec §7.5)."""
        return self.connection.send(Ping(f"keepalive-{next(self._tokens)}"))

    def quit(self) -> None:
        """The user is leaving; the front end closes the connection."""
        if self.status is None:
            self.status = ExitStatus.OK

    def _send(self, message: Message) -> Step:
        try:
            return Step(self.connection.send(message))
        except LocalProtocolError as exc:
            reason = self._too_long() if exc.code is ErrorCode.FRAME_TOO_LARGE else exc.message
            return Step(lines=(Line(Style.ERROR, f"not sent: {reason}"),))

    # --- server side ---------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Line]:
        """Feed bytes from the server (``b""`` for end of stream); returns the lines to show."""
        lines: list[Line] = []
        if self._stopped:
            return lines
        if data:
            self._heard = True
        self.connection.receive_data(data)
        while not self._stopped:
            try:
                event = self.connection.next_event()
            except RemoteProtocolError as exc:
                if exc.code is ErrorCode.UNKNOWN_TYPE:
                    continue  # §7.2: a client SHOULD ignore message types it does not know
                lines.append(
                    self._end(
                        ExitStatus.PROTOCOL_ERROR,
                        f"bad data from the server ({exc.code}): {visible(exc.message)}",
                    )
                )
                break
            if event is NEED_DATA:
                break
            line = self._on_event(event)
            if line is not None:
                lines.append(line)
        return lines

    def lost(self, reason: str) -> list[Line]:
        """The transport failed (reset, socket error)."""
        if self._stopped:
            return []
        return [self._end(ExitStatus.CONNECTION_LOST, f"connection lost: {visible(reason)}")]

    def _end(self, status: ExitStatus, text: str, style: Style = Style.ERROR) -> Line:
        self._stopped = True
        if self.status is None:
            self.status = status
        return Line(style, text)

    def _on_event(self, event: Message | ConnectionClosed) -> Line | None:
        if isinstance(event, ConnectionClosed):
            if self.status is not None:
                self._stopped = True
                return None  # we were leaving; the server's end of stream is expected
            how = "" if event.clean else " in the middle of a frame"
            if not self._heard and not self._tls:
                # A TLS port closes a plaintext connection without a frame (§17.1).
                how = " without a word (if its port serves TLS, connect with --tls)"
            return self._end(ExitStatus.CONNECTION_LOST, f"the server closed the connection{how}")
        if isinstance(event, Relayed):
            return Line(Style.CHAT, f"{address(event.name, event.host)}: {visible(event.text)}")
        if isinstance(event, Joined):
            return Line(Style.NOTICE, f"* {address(event.name, event.host)} joined ({_here(event.clients)})")
        if isinstance(event, Left):
            how = _DEPARTURES.get(event.reason) or f"left ({visible(event.reason)})"
            return Line(Style.NOTICE, f"* {address(event.name, event.host)} {how} ({_here(event.clients)})")
        if isinstance(event, Pong):
            return self._on_pong(event)
        if isinstance(event, Roster):
            return self._on_roster(event)
        if isinstance(event, Error):
            return self._on_error(event)
        if isinstance(event, Shutdown):
            return self._end(
                ExitStatus.SERVER_SHUTDOWN, f"* server shutdown: {visible(event.reason)}", Style.STATUS
            )
        if isinstance(event, Welcome):
            return self._on_welcome(event)
        return None

    def _on_welcome(self, welcome: Welcome) -> Line:
        if welcome.proto != PROTOCOL_VERSION:
            # §5.4.1: a client SHOULD close on a protocol version it does not speak.
            return self._end(ExitStatus.PROTOCOL_ERROR, f"the server speaks protocol {welcome.proto}, not 1")
        self.welcome = welcome
        return Line(
            Style.STATUS,
            f"* connected as {address(welcome.name, welcome.host)} — {_here(welcome.clients)}; "
            f"server {visible(welcome.server)}",
        )

    def _on_error(self, error: Error) -> Line:
        text = f"{visible(error.code)}: {visible(error.message)}"
        if error.fatal:  # §7.2: the fatal flag decides, whatever the code
            return self._end(ExitStatus.PROTOCOL_ERROR, f"disconnected by the server: {text}")
        if self.connection.state is State.AWAIT_HELLO:
            self.refusal = error
            return Line(Style.ERROR, f"name refused: {text}")
        if error.code == ErrorCode.TEXT_TOO_LONG and self._echoes:
            # The oldest say still unconfirmed is the one refused; its pong will show nothing.
            said, _ = self._echoes.pop(next(iter(self._echoes)))
            return Line(Style.ERROR, f"not relayed ({text}): {_preview(said)}")
        return Line(Style.ERROR, f"error from the server: {text}")

    def _on_pong(self, pong: Pong) -> Line | None:
        if pong.token == self._barrier:
            self.barrier_passed = True
            return None
        if pong.token in self._echoes:
            return self._echoes.pop(pong.token)[1]
        sent = self._pings.pop(pong.token, None)
        if sent is None:
            return None  # not ours to show
        return Line(Style.NOTICE, f"* pong: {(self.clock() - sent) * 1000:.1f} ms round trip")

    def _on_roster(self, roster: Roster) -> Line:
        me = self.welcome.name if self.welcome is not None else None
        members = ", ".join(
            address(m.name, m.host) + (" (you)" if m.name == me else "") for m in roster.members
        )
        if roster.truncated:
            return Line(Style.NOTICE, f"* the first {len(roster.members)} here: {members} (list truncated)")
        return Line(Style.NOTICE, f"* {_here(len(roster.members))}: {members}")
