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
from collections.abc import Sequence
from typing import cast

from protocol import ClientId, ServerCore, dispatch
from protocol.constants import CLOSE_LINGER, SHUTDOWN_FLUSH_TIMEOUT
from protocol.options import ServerOptions
from protocol.serving import LISTEN_BACKLOG, Deadlines, listening_line, peer_host

log = logging.getLogger("impl_asyncio")

#: Bytes queued for one client that make the server write them out before the loop iteration
#: ends: uvloop reads a busy socket up to 32 times per iteration, and a burst that large
#: waiting for the end of it would sit in memory, even pass the output cap (§10).
FLUSH_EARLY = 256 * 1024
#: Connections accepted per readiness event, so an accept storm cannot starve the others.
ACCEPT_BATCH = 256
#: Pause after an accept error such as EMFILE: the listener stays readable, and retrying
#: at once would spin.
ACCEPT_BACKOFF = 0.1


class _ClientProtocol(asyncio.Protocol):
    """One accepted connection; hands what it hears to the server."""

    __slots__ = ("client", "closing", "eof", "pending", "pending_size", "server", "transport", "unsent")

    def __init__(self, server: AsyncioServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.client: ClientId = 0
        self.closing = False  # the core is done with it: input is discarded, writes dropped
        self.eof = False  # the peer's end of stream was read
        self.pending: list[bytes] = []  # frames queued in this loop iteration, not yet written
        self.pending_size = 0
        # The transport's write buffer size just after our last write: it only shrinks until
        # the next one, so pending_size + unsent bounds the output buffer from above.
        self.unsent = 0

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
        self._flush_early = False  # a queue passed FLUSH_EARLY: write before the iteration ends
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._listener: socket.socket | None = None
        self._accepting: set[asyncio.Task[object]] = set()  # connect_accepted_socket, running
        self._stop_requested = asyncio.Event()
        self._done = asyncio.Event()  # every connection closed, or a second signal

    async def serve(self) -> int:
        """Listen, serve until SIGINT or SIGTERM, shut down (§12); returns the exit status."""
        loop = self._loop
        try:
            listener = _listen(self.options.host, self.options.port)
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", self.options.host, self.options.port, exc)
            return 1
        self._listener = listener
        loop.add_reader(listener.fileno(), self._accept)
        # Handlers first: whoever reads the listening line may signal at once.
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal, signum)
        host, port = listener.getsockname()[:2]
        log.info("serving on %s:%d (codec %s)", host, port, self.core.codec.name.value)
        print(listening_line(host, port), flush=True)
        try:
            await self._stop_requested.wait()
            self._stop_accepting()
            self.stop()
            try:
                await asyncio.wait_for(self._done.wait(), SHUTDOWN_FLUSH_TIMEOUT)
            except TimeoutError:
                log.warning("shutdown flush timed out; closing %d connections", len(self.peers))
        finally:
            self._stop_accepting()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            for peer in list(self.peers.values()):
                assert peer.transport is not None
                peer.transport.abort()
            # Let the aborted transports run their connection_lost callbacks and close.
            await asyncio.sleep(0)
        log.info("stopped")
        return 0

    # --- accepting: a batch per readiness event --------------------------------------------

    def _accept(self) -> None:
        """Accept what the listener holds, up to ACCEPT_BATCH.

        loop.create_server would do, but uvloop accepts one connection per loop iteration:
        in a join storm every join would then cost a separate flush to every member.
        """
        listener = self._listener
        if listener is None:
            return
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                # EMFILE, ENFILE, ENOBUFS...: keep serving the connections there are.
                log.error("accept failed: %s; pausing accepts for %.1f s", exc, ACCEPT_BACKOFF)
                self._loop.remove_reader(listener.fileno())
                self._loop.call_later(ACCEPT_BACKOFF, self._resume_accepting)
                return
            task = self._loop.create_task(
                self._loop.connect_accepted_socket(lambda: _ClientProtocol(self), sock)
            )
            self._accepting.add(task)
            task.add_done_callback(self._accepted)

    def _accepted(self, task: asyncio.Task[object]) -> None:
        self._accepting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # It never reached the room. Its socket is closed by its transport, or, if none was
            # made, when the socket object is dropped: closing it here could close a reused fd.
            log.info("dropping an accepted connection: %s", task.exception())

    def _resume_accepting(self) -> None:
        if self._listener is not None:
            self._loop.add_reader(self._listener.fileno(), self._accept)

    def _stop_accepting(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            self._loop.remove_reader(listener.fileno())
            listener.close()

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
        if self._flush_early:
            self._flush()

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
        if peer.pending_size > FLUSH_EARLY:
            self._flush_early = True

    def buffered(self, client: ClientId) -> int:
        peer = self.peers.get(client)
        if peer is None or peer.transport is None:
            return 0
        return peer.pending_size + peer.transport.get_write_buffer_size()

    def fan_out(
        self, data: bytes, clients: Sequence[ClientId], exclude: ClientId | None, limit: int
    ) -> list[ClientId]:
        """:func:`protocol.server.fan_out_each` over this server's peers, in one loop."""
        over: list[ClientId] = []
        peers = self.peers
        dirty = self._dirty
        flush_scheduled = bool(dirty)
        size = len(data)
        for client in clients:
            if client == exclude:
                continue
            peer = peers.get(client)
            if peer is None or peer.closing:
                continue
            if peer.pending_size + peer.unsent > limit:
                # Maybe over: ask the transport what it still holds (the exact buffered()).
                assert peer.transport is not None
                peer.unsent = peer.transport.get_write_buffer_size()
                if peer.pending_size + peer.unsent > limit:
                    over.append(client)
                    continue
            if not peer.pending:
                dirty.append(peer)
            peer.pending.append(data)
            peer.pending_size += size
            if peer.pending_size > FLUSH_EARLY:
                self._flush_early = True
        if dirty and not flush_scheduled:
            self._loop.call_soon(self._flush)
        return over

    def _flush(self) -> None:
        self._flush_early = False
        dirty, self._dirty = self._dirty, []
        for peer in dirty:
            if not peer.closing:  # else written by close() or dropped
                self._write_pending(peer)

    def _write_pending(self, peer: _ClientProtocol) -> None:
        if peer.pending:
            transport = peer.transport
            assert transport is not None
            # uvloop gathers the frames into one send without joining them first.
            transport.writelines(peer.pending)
            peer.pending.clear()
            peer.pending_size = 0
            peer.unsent = transport.get_write_buffer_size()

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


def _listen(host: str, port: int) -> socket.socket:
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    listener = socket.socket(family, kind, proto)
    try:
        # Lets a restarted server bind while old connections sit in TIME_WAIT.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(sockaddr)
        listener.listen(LISTEN_BACKLOG)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener


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
