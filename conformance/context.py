"""What a conformance case works with: the server under test, peers, names and helpers."""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from protocol import Codec, Hello, Joined, Left, Relayed, get_codec

from .cluster import Cluster
from .registry import Case, Settings
from .serverproc import ServerProcess
from .wire import PLAIN, Received, Security, Transcript, WirePeer

_names = itertools.count(1)

#: Starts a server with the run's command template: (settings, codec flag, host, port) -> process.
Spawner = Callable[[Settings, bool, str | None, int | None], ServerProcess]


class Context:
    """One case's view of the server under test.

    Peers made here share one transcript, which the runner attaches to the report when
    the case fails, and are closed when the case ends. Against a cluster (§16.2) the peers
    are spread over ``addresses``, one node after the other, and ``cluster`` is the cluster.
    """

    def __init__(
        self,
        case: Case,
        *,
        address: tuple[str, int],
        codec_name: str,
        server: ServerProcess | None,
        spawner: Spawner | None,
        timeout_scale: float,
        transcript: Transcript,
        template: str | None = None,
        security: Security = PLAIN,
        addresses: Sequence[tuple[str, int]] = (),
        cluster: Cluster | None = None,
    ) -> None:
        self.case = case
        self.address = address
        #: Where new connections go, in turn: the nodes of a cluster, or just ``address``.
        self.addresses = list(addresses) or [address]
        self._next_address = itertools.cycle(self.addresses)
        #: The cluster under test, when the run judges one (``--cluster-nodes``).
        self.cluster = cluster
        self.codec_name = codec_name
        self.codec: Codec = get_codec(codec_name)
        #: The server process, when the runner started it (None against ``--target``).
        self.server = server
        self._spawner = spawner
        #: The command template servers are started from (None against ``--target``).
        self.template = template
        self.scale = timeout_scale
        self.transcript = transcript
        self.peers: list[WirePeer] = []
        self.spawned: list[ServerProcess] = []
        self._max_frame: int | None = None
        #: TLS and the token every peer uses (§16.1 rule 5).
        self.security = security

    # --- time --------------------------------------------------------------------------

    def timeout(self, seconds: float = 5.0) -> float:
        """``seconds`` stretched by the run's ``--timeout-scale``."""
        return seconds * self.scale

    # --- peers -------------------------------------------------------------------------

    def name(self, base: str = "member") -> str:
        """A name no other case of the run uses, so cases sharing a server never collide."""
        return f"{base[:24]}{next(_names)}"

    def peer(
        self,
        label: str = "peer",
        *,
        rcvbuf: int | None = None,
        address: tuple[str, int] | None = None,
        security: Security | None = None,
        source: str | None = None,
    ) -> WirePeer:
        """A new connection (not joined), to the next node in turn unless ``address`` is given,
        over TLS and with the run's token unless ``security`` says otherwise."""
        peer = WirePeer(
            address or next(self._next_address),
            codec=get_codec(self.codec_name),
            label=label,
            transcript=self.transcript,
            timeout=self.timeout(),
            rcvbuf=rcvbuf,
            security=self.security if security is None else security,
            source=source,
        )
        self.peers.append(peer)
        return peer

    def hello(self, name: str) -> Hello:
        """A hello of ``name`` with the run's token, for cases that encode it themselves."""
        return Hello(name, self.security.token)

    def member(self, label: str, name: str | None = None, *, rcvbuf: int | None = None) -> WirePeer:
        """A new connection that has joined (under a unique name unless ``name`` is given)."""
        peer = self.peer(label, rcvbuf=rcvbuf)
        welcome = peer.join(name or self.name(label))
        if self._max_frame is None:
            self._max_frame = welcome.max_frame
        return peer

    def members(self, *labels: str) -> list[WirePeer]:
        """Several members, joined in the order given; each one's joined notices are consumed."""
        joined = [self.member(label) for label in labels]
        self.settle(*joined)
        for peer in joined:
            peer.inbox.clear()
        return joined

    @property
    def max_frame(self) -> int:
        """The server's advertised ``max_frame`` (joins a short-lived probe if no member has)."""
        if self._max_frame is None:
            probe = self.member("probe")
            self.close_gracefully(probe)
        assert self._max_frame is not None
        return self._max_frame

    def host_of(self, peer: WirePeer) -> str:
        """The address the server sees for ``peer`` (§8.3), in canonical text form."""
        return str(ipaddress.ip_address(peer.sock.getsockname()[0]))

    # --- synchronisation ---------------------------------------------------------------

    def settle(self, *peers: WirePeer) -> list[list[Received]]:
        """Barrier on each peer in turn; return what each received before its pong.

        Put the peer that caused something first: once its pong is back the server has
        handled its frames, so the later peers' pongs come after whatever that caused for
        them (§11). Closed peers are skipped.
        """
        return [peer.barrier() if not peer.closed else peer.wait_closed() for peer in peers]

    def close_gracefully(self, peer: WirePeer) -> None:
        """Half-close and read until the server closes too (§9.4): a departure at a frame boundary."""
        peer.half_close()
        peer.wait_closed()
        peer.close()

    # --- servers -----------------------------------------------------------------------

    def spawn(
        self,
        settings: Settings | None = None,
        *,
        codec_flag: bool = True,
        host: str | None = None,
        port: int | None = None,
    ) -> ServerProcess:
        """Start another server with the run's command template; stopped when the case ends."""
        if self._spawner is None:
            raise RuntimeError("this run cannot start servers (--target)")
        process = self._spawner(settings or Settings(), codec_flag, host, port)
        self.spawned.append(process)
        return process

    def close_all(self) -> None:
        for peer in self.peers:
            peer.close()
        for process in self.spawned:
            process.stop()


# --- matchers ---------------------------------------------------------------------------


class Match:
    """A predicate on received messages that can say what it is looking for."""

    def __init__(self, description: str, predicate: Callable[[Any], bool]) -> None:
        self.description = description
        self.predicate = predicate

    def __call__(self, message: Any) -> bool:
        return self.predicate(message)

    def __repr__(self) -> str:
        return self.description


def relayed(text: str, name: str | None = None) -> Match:
    """Matches ``message`` with this text (and sender name)."""
    shown = text if len(text) <= 60 else f"{text[:60]}... ({len(text)} characters)"
    sender = f", name: {name!r}" if name is not None else ""
    return Match(
        f"message{{text: {shown!r}{sender}}}",
        lambda m: isinstance(m, Relayed) and m.text == text and (name is None or m.name == name),
    )


def joined(name: str) -> Match:
    return Match(f"joined{{name: {name!r}}}", lambda m: isinstance(m, Joined) and m.name == name)


def left(name: str) -> Match:
    return Match(f"left{{name: {name!r}}}", lambda m: isinstance(m, Left) and m.name == name)
