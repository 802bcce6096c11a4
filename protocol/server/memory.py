"""A :class:`ServerCore` driven in memory, for tests, fuzzing and simulations.

It plays the server's part with perfect sockets and a clock of its own: what the core queues
for a client stays in that client's outbox until the client :meth:`~MemoryServer.read`\\ s it
(so a client that never reads fills its outbox, as a stalled peer fills its socket), and the
core's directives are recorded instead of carried out. What a client sends while the core
does not read it waits, as in a socket, until the core reads it again; input the core left
over is handed back at once (every call is a whole loop turn, repeated until nothing is left).
"""

from __future__ import annotations

from .core import Disposal, ServerCore
from .rules import ClientId

#: Loop turns one call may take; more means the core never settles.
_MOST_TURNS = 1_000_000


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
        #: Clients the core does not read now, and what each sent meanwhile.
        self.paused: set[ClientId] = set()
        self.unread: dict[ClientId, list[bytes]] = {}
        self._known: set[ClientId] = set()

    # --- events ------------------------------------------------------------------------------

    def connect(self, host: str = "127.0.0.1") -> ClientId:
        client = self.core.connect(host, self.now)
        self._known.add(client)
        self._settle()
        return client

    def receive(self, client: ClientId, data: bytes) -> None:
        if client in self.paused or client in self.unread:
            self.unread.setdefault(client, []).append(data)
        else:
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
        for _ in range(_MOST_TURNS):
            # Nothing is written: the outboxes are read by read(). The directives are recorded.
            core.pump(lambda outbox: None, self._record, self._reading)
            if core.has_pending:
                core.process_pending(self.now)
                continue
            ready = [client for client in self.unread if client not in self.paused]
            if not ready:
                break
            for client in ready:
                chunks = self.unread[client]
                data = chunks.pop(0)
                if not chunks:
                    del self.unread[client]
                core.receive(client, data, self.now)
        else:
            raise RuntimeError(f"the core still had work after {_MOST_TURNS} turns")
        for client in list(self._known):
            outbox = core.outbox(client)
            if outbox is None:
                self._known.discard(client)
                continue
            self.peak = max(self.peak, outbox.buffered)
            if outbox.closing:
                self.closed.setdefault(client, True)

    def _reading(self, client: ClientId, reading: bool) -> None:
        if reading:
            self.paused.discard(client)
        else:
            self.paused.add(client)

    def _record(self, disposal: Disposal, client: ClientId) -> None:
        self.directives.append((disposal, client))
        self.closed.setdefault(client, disposal is not Disposal.ABORT)
        if disposal is not Disposal.HALF_CLOSE:
            self.unread.pop(client, None)
            self.paused.discard(client)
