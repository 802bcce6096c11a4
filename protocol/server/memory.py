"""A :class:`ServerCore` driven in memory, for tests, fuzzing and simulations.

It plays the server's part with perfect sockets and a clock of its own: what the core queues
for a client stays in that client's outbox until the client :meth:`~MemoryServer.read`\\ s it
(so a client that never reads fills its outbox, as a stalled peer fills its socket), and the
core's directives are recorded instead of carried out.
"""

from __future__ import annotations

from .core import Disposal, ServerCore
from .rules import ClientId


class MemoryServer:
    """Runs ``core`` without sockets; every call leaves the core with nothing left to do."""

    def __init__(self, core: ServerCore, now: float = 0.0) -> None:
        self.core = core
        self.now = now
        #: How each client's connection is ending: ``True`` once the core began closing it
        #: by §9.4 (flushing first), ``False`` if it was aborted first (§10).
        self.closed: dict[ClientId, bool] = {}
        #: Every directive, in order.
        self.directives: list[tuple[Disposal, ClientId]] = []
        #: The most octets ever buffered for one client after any call (§10: never above the cap).
        self.peak = 0
        self._known: set[ClientId] = set()

    # --- events ------------------------------------------------------------------------------

    def connect(self, host: str = "127.0.0.1") -> ClientId:
        client = self.core.connect(host, self.now)
        self._known.add(client)
        self._settle()
        return client

    def receive(self, client: ClientId, data: bytes) -> None:
        self.core.receive(client, data, self.now)
        self._settle()

    def lost(self, client: ClientId) -> None:
        self.core.connection_lost(client)
        self._settle()

    def advance(self, seconds: float) -> None:
        """Move the clock on and run the timers that fall due."""
        self.now += seconds
        self.core.expire(self.now)
        self._settle()

    def shutdown(self) -> None:
        self.core.shutdown(self.now)
        self._settle()

    def read(self, client: ClientId) -> bytes:
        """Everything queued for ``client`` so far, taken out of its outbox."""
        outbox = self.core.outbox(client)
        if outbox is None or not outbox.frames:
            return b""
        data = b"".join(outbox.frames)
        self.core.sent(client, len(data))
        self._settle()
        return data

    def buffered(self, client: ClientId) -> int:
        outbox = self.core.outbox(client)
        return 0 if outbox is None else outbox.buffered

    # --- what a server would do after every event ----------------------------------------

    def _settle(self) -> None:
        core = self.core
        # Nothing is written: the outboxes are read by read(). The directives are recorded.
        core.pump(lambda outbox: None, self._record)
        for client in list(self._known):
            outbox = core.outbox(client)
            if outbox is None:
                self._known.discard(client)
                continue
            self.peak = max(self.peak, outbox.buffered)
            if outbox.closing:
                self.closed.setdefault(client, True)

    def _record(self, disposal: Disposal, client: ClientId) -> None:
        self.directives.append((disposal, client))
        self.closed.setdefault(client, disposal is not Disposal.ABORT)
