"""Differential check: one scripted session, replayed on several servers, must read the same.

The script has several clients join, talk, ask for the roster, ping, make errors and leave
in every way there is. After each step every client runs a ping/pong barrier, the actor
first (§11), so each client's stream of messages is fully determined by the protocol;
two conforming servers must therefore produce identical transcripts of what the spec makes
normative. Each message is compared by its spec fields only, in spec order: the encoding,
the field order and unknown fields are free (§4.2, §5.1), and so are the texts the spec
calls informative, ``error.message`` (§5.4.7, §9.1) and ``welcome.server`` (§5.4.1).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from typing import Any, TextIO

from protocol import (
    SERVER_MESSAGES,
    Error,
    Hello,
    Ping,
    Pong,
    ProtocolError,
    Say,
    Welcome,
    Who,
    get_codec,
)
from protocol.messages import from_wire

from .plugin import RunOptions
from .serverproc import BUNDLED, ServerProcess
from .wire import PLAIN, Security, Transcript, WirePeer

Session = dict[str, list[Any]]


#: What stands in for a field whose content the spec leaves free.
INFORMATIVE = "<informative>"


def normalise(value: Any) -> Any:
    """What of a decoded server payload two conforming servers must agree on.

    A valid server message becomes its spec fields in spec order, informative texts replaced;
    anything else (not a server message at all) is kept as it came, so that it shows.
    """
    try:
        message = from_wire(value, SERVER_MESSAGES)
    except ProtocolError:
        return value
    wire = message.to_wire()
    if isinstance(message, Welcome):
        wire["server"] = INFORMATIVE
    elif isinstance(message, Error):
        wire["message"] = INFORMATIVE
    elif isinstance(message, Pong) and message.token.startswith("barrier-"):
        wire["token"] = "<barrier>"  # noqa: S105 (a placeholder, not a secret)
    return wire


class _Script:
    def __init__(
        self, address: tuple[str, int], codec: str, timeout: float, security: Security = PLAIN
    ) -> None:
        self.address = address
        self.security = security
        self.codec = codec
        self.timeout = timeout
        self.transcript = Transcript()
        self.peers: dict[str, WirePeer] = {}

    def connect(self, label: str) -> WirePeer:
        peer = WirePeer(
            self.address,
            codec=get_codec(self.codec),
            label=label,
            transcript=self.transcript,
            timeout=self.timeout,
            security=self.security,
        )
        self.peers[label] = peer
        return peer

    def step(self, actor: WirePeer) -> None:
        """Let everything ``actor`` caused arrive everywhere (actor first, then the others)."""
        for peer in [actor, *(p for p in self.peers.values() if p is not actor)]:
            if peer.closed:
                continue
            if peer.welcome is None:
                continue
            peer.inbox[:0] = peer.barrier()

    def run(self) -> Session:
        alice = self.connect("alice")
        alice.join("alice")
        bob = self.connect("bob")
        bob.join("Bob")
        self.step(bob)
        carol = self.connect("carol")
        carol.send(Hello("ALICE"))
        carol.expect(lambda m: getattr(m, "code", None) == "name_taken")
        carol.send(Hello("carol dee"))
        carol.expect(lambda m: getattr(m, "code", None) == "name_invalid")
        carol.join("Carol\u00e9")
        self.step(carol)
        alice.send(Say("hi all"))
        self.step(alice)
        bob.send(Say(""))
        bob.send(Say("e\u0301 \U0001f600"))
        self.step(bob)
        bob.send(Who())
        self.step(bob)
        carol.send(Ping("\u00fc-token"))
        self.step(carol)
        bob.send_value({"type": "dance"})
        bob.send_value({"type": "say"})
        bob.send(Hello("Bob"))
        bob.send_value({"type": "say", "text": "after errors", "extra": 1})
        self.step(bob)
        dave = self.connect("dave")
        dave.send(Say("too early"))
        dave.wait_closed()
        self.step(alice)
        erin = self.connect("erin")
        erin.join("erin")
        self.step(erin)
        erin.send_raw(b"\x00\x00\x00\x00", "zero-length frame")
        erin.wait_closed()
        self.step(alice)
        carol.send_raw(erin.frame(Say("cut").to_wire())[:5], "a partial frame, then FIN")
        carol.half_close()
        carol.wait_closed()
        self.step(alice)
        bob.half_close()
        bob.wait_closed()
        self.step(alice)
        alice.send(Who())
        self.step(alice)
        alice.half_close()
        alice.wait_closed()
        session: Session = {}
        for label, peer in self.peers.items():
            session[label] = [normalise(v) for v in peer.values] + [f"<closed: {peer.closed}>"]
            peer.close()
        return session


def run_session(
    address: tuple[str, int], codec: str = "msgpack", timeout: float = 5.0, security: Security = PLAIN
) -> Session:
    """Play the script against the server at ``address`` (over TLS and with a token as ``security``
    says); return each client's decoded messages."""
    script = _Script(address, codec, timeout, security)
    try:
        return script.run()
    finally:
        for peer in script.peers.values():
            peer.close()


def compare(
    reference: Session, candidate: Session, names: tuple[str, str] = ("reference", "candidate")
) -> list[str]:
    """Unified diff lines between two sessions (empty when they agree)."""

    def lines(session: Session) -> list[str]:
        return [
            f"{label}: {json.dumps(v, ensure_ascii=False, default=repr)}"
            for label in session
            for v in session[label]
        ]

    return list(difflib.unified_diff(lines(reference), lines(candidate), names[0], names[1], lineterm=""))


def session_of(options: RunOptions) -> Session:
    """Run the script against the server ``options`` describes (started fresh when it has a template)."""
    timeout = 5.0 * options.timeout_scale
    if options.target is not None:
        return run_session(options.target, options.codec, timeout, options.security)
    assert options.template is not None
    args = ["--codec", options.codec] if options.config_flags and "{codec}" not in options.template else []
    with ServerProcess(options.template, host=options.host, extra_args=args, codec=options.codec) as server:
        return run_session(server.address, options.codec, timeout, options.security)


def differential_main(runs: Sequence[RunOptions], out: TextIO) -> bool:
    """Compare every run's session with the first run of the same codec; True when any differs."""
    failed = False
    by_codec: dict[str, list[RunOptions]] = {}
    for options in runs:
        by_codec.setdefault(options.codec, []).append(options)
    for codec, members in by_codec.items():
        if len(members) == 1:
            # One implementation alone is compared with the reference server.
            reference = RunOptions(name="impl_select", codec=codec, template=BUNDLED["impl_select"])
            members = [reference, *members]  # noqa: PLW2901
        base = session_of(members[0])
        for other in members[1:]:
            diff = compare(base, session_of(other), (members[0].label, other.label))
            verdict = "identical" if not diff else f"DIFFERENT ({len(diff)} diff lines)"
            out.write(f"\ndifferential {members[0].label} vs {other.label}: {verdict}\n")
            if diff:
                failed = True
                out.write("\n".join(diff[:200]) + "\n")
    return failed
