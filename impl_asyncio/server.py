"""The asyncio server: one ``asyncio.Protocol`` per connection, uvloop when it is installed.

Every protocol and room decision is :class:`protocol.ServerCore`'s; this module moves bytes
and runs timers. Protocols and transports, not streams: a transport hands over whatever
arrived and the frame decoder bounds what is kept, while ``StreamReader`` would buffer on
its own terms.

A client's output buffer is the frames queued for it during the current loop iteration
plus its transport's write buffer. The queued frames go to the transport in one write at
the end of the iteration, so a burst of fan-out costs each recipient one ``send``, not one
per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import socket
from typing import cast

from protocol import ClientId, ServerCore, dispatch
from protocol.constants import CLOSE_LINGER, SHUTDOWN_FLUSH_TIMEOUT
from protocol.options import ServerOptions
from protocol.serving import LISTEN_BACKLOG, Deadlines, listening_line, peer_host

log = logging.getLogger("impl_asyncio")


class _ClientProtocol(asyncio.Protocol):
    """One accepted connection; hands what it hears to the server."""

    __slots__ = ("client", "closing", "eof", "pending", "pending_size", "server", "transport")

    def __init__(self, server: AsyncioServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.client: ClientId = 0
        self.closing = False  # the core is done with it: input is discarded, writes dropped
        self.eof = False  # the peer's end of stream was read
        self.pending: list[bytes] = []  # frames queued in this loop iteration, not yet written
        self.pending_size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.connected(self)

    def data_received(self, data: bytes) -> None:
        if not self.closing:  # else draining after a half-close (§9.4 step 4)
            self.server.received(self, data)

    def eof_received(self) -> bool:
        self.eof = True
        if self.closing:
            assert self.transport is not None
            self.transport.close()  # the drain is over; close() still flushes what is queued
        else:
            self.server.received(self, b"")
        # Keep the transport open: the core's Close decides how it ends.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.disconnected(self, exc)


class AsyncioServer:
    """Serves one room until :meth:`stop`; also the :class:`protocol.Transport` for dispatch."""

    def __init__(self, options: ServerOptions, core: ServerCore) -> None:
        self.options = options
        self.core = core
        self.peers: dict[ClientId, _ClientProtocol] = {}
        self._hello: Deadlines[ClientId] = Deadlines(options.hello_timeout)
        self._closing: Deadlines[ClientId] = Deadlines(CLOSE_LINGER)
        # The one loop timer and its deadline (uvloop returns a plain Handle, without when(),
        # for a deadline already past).
        self._timer: asyncio.Handle | None = None
        self._timer_when = 0.0
        self._dirty: list[_ClientProtocol] = []
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self._done = asyncio.Event()  # every connection closed, or a second signal

    async def serve(self) -> int:
        """Listen, serve until SIGINT or SIGTERM, shut down (§12); returns the exit status."""
        loop = self._loop
        try:
            listener = await loop.create_server(
                lambda: _ClientProtocol(self),
                self.options.host,
                self.options.port,
                backlog=LISTEN_BACKLOG,
                reuse_address=True,
            )
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", self.options.host, self.options.port, exc)
            return 1
        # Handlers first: whoever reads the listening line may signal at once.
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal, signum)
        host, port = listener.sockets[0].getsockname()[:2]
        log.info("serving on %s:%d (codec %s)", host, port, self.core.codec.name.value)
        print(listening_line(host, port), flush=True)
        try:
            await self._stop_requested.wait()
            listener.close()
            self.stop()
            try:
                await asyncio.wait_for(self._done.wait(), SHUTDOWN_FLUSH_TIMEOUT)
            except TimeoutError:
                log.warning("shutdown flush timed out; closing %d connections", len(self.peers))
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            for peer in list(self.peers.values()):
                assert peer.transport is not None
                peer.transport.abort()
            # Let the aborted transports run their connection_lost callbacks and close.
            await asyncio.sleep(0)
        log.info("stopped")
        return 0

    def _on_signal(self, signum: int) -> None:
        if not self._stop_requested.is_set():
            log.info("%s: shutting down", signal.Signals(signum).name)
            self._stop_requested.set()
        else:
            log.warning("%s again: closing every connection now", signal.Signals(signum).name)
            self._done.set()

    def stop(self) -> None:
        """Send every connection ``shutdown`` and close them all, flushing first (§12)."""
        self._stopping = True
        dispatch(self.core, self.core.shutdown(), self, self.options.max_output_buffer)
        if not self.peers:
            self._done.set()

    # --- events from the connections --------------------------------------------------------

    def connected(self, peer: _ClientProtocol) -> None:
        assert peer.transport is not None
        peername = peer.transport.get_extra_info("peername")
        if self._stopping or peername is None:
            # Accepted just before the listener closed, or reset before it could be asked
            # its address: it never becomes a connection of the room.
            peer.closing = True
            peer.transport.abort()
            return
        sock = peer.transport.get_extra_info("socket")
        with contextlib.suppress(OSError):  # already reset: reading will report it
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer.client = self.core.connect(peer_host(str(peername[0])))
        self.peers[peer.client] = peer
        self._hello.arm(peer.client, self._loop.time())
        self._schedule_timer()

    def received(self, peer: _ClientProtocol, data: bytes) -> None:
        dispatch(self.core, self.core.receive(peer.client, data), self, self.options.max_output_buffer)

    def disconnected(self, peer: _ClientProtocol, exc: Exception | None) -> None:
        if self.peers.pop(peer.client, None) is None:
            return
        self._hello.cancel(peer.client)
        self._closing.cancel(peer.client)
        peer.pending.clear()
        if not peer.closing:
            # Reset or socket error: for a member, a departure with reason connection_lost.
            if exc is not None:
                log.debug("connection %d: %s", peer.client, exc)
            peer.closing = True
            dispatch(self.core, self.core.connection_lost(peer.client), self, self.options.max_output_buffer)
        if self._stopping and not self.peers:
            self._done.set()

    # --- timers: one loop timer for the earliest deadline of both queues -------------------

    def _schedule_timer(self) -> None:
        deadlines = [d for d in (self._hello.next_deadline(), self._closing.next_deadline()) if d is not None]
        if not deadlines:
            return
        when = min(deadlines)
        if self._timer is not None:
            if self._timer_when <= when:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)
        self._timer_when = when

    def _on_timer(self) -> None:
        self._timer = None
        now = self._loop.time()
        for client in self._hello.expire(now):
            dispatch(self.core, self.core.hello_timeout(client), self, self.options.max_output_buffer)
        for client in self._closing.expire(now):
            peer = self.peers.get(client)
            if peer is not None and peer.transport is not None:
                peer.transport.abort()  # CLOSE_LINGER is over, whatever remains (§9.4)
        self._schedule_timer()

    # --- protocol.Transport ------------------------------------------------------------------

    def write(self, client: ClientId, data: bytes) -> None:
        peer = self.peers.get(client)
        if peer is None or peer.closing:
            return
        if not peer.pending:
            if not self._dirty:
                self._loop.call_soon(self._flush)
            self._dirty.append(peer)
        peer.pending.append(data)
        peer.pending_size += len(data)

    def buffered(self, client: ClientId) -> int:
        peer = self.peers.get(client)
        if peer is None or peer.transport is None:
            return 0
        return peer.pending_size + peer.transport.get_write_buffer_size()

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for peer in dirty:
            if not peer.closing:  # else written by close() or dropped
                self._write_pending(peer)

    def _write_pending(self, peer: _ClientProtocol) -> None:
        if peer.pending:
            assert peer.transport is not None
            peer.transport.write(b"".join(peer.pending))
            peer.pending.clear()
            peer.pending_size = 0

    def close(self, client: ClientId, flush: bool) -> None:
        peer = self.peers.get(client)
        if peer is None or peer.closing:
            return
        assert peer.transport is not None
        self._hello.cancel(client)
        if not flush:
            peer.closing = True
            peer.pending.clear()
            peer.transport.abort()
            return
        self._write_pending(peer)
        peer.closing = True
        # §9.4: flush, half-close, drain until EOF; all of it bounded by CLOSE_LINGER. Both
        # calls flush the write buffer before acting.
        if peer.eof:
            peer.transport.close()
        else:
            peer.transport.write_eof()
        self._closing.arm(client, self._loop.time())
        self._schedule_timer()


async def _serve(options: ServerOptions, core: ServerCore) -> int:
    return await AsyncioServer(options, core).serve()


def run(options: ServerOptions, core: ServerCore) -> int:
    """Serve until stopped by a signal; returns the exit status. Uses uvloop if installed."""
    try:
        # Optional (the "uvloop" extra); imported by name so that type checking needs no stubs.
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return asyncio.run(_serve(options, core))
    log.info("using uvloop %s", uvloop.__version__)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve(options, core))
