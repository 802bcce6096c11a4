"""The asyncio server: one ``asyncio.Protocol`` per connection, uvloop when it is installed.

Only I/O: :class:`protocol.server.ServerCore` decides everything; this module hands what
arrives to the core, writes what the core's outboxes hold, carries out its directives and
runs one loop timer for its next deadline. Protocols and transports, not streams: a
transport hands over whatever arrived and the frame decoder bounds what is kept, while
``StreamReader`` would buffer on its own terms.

Outboxes are written once per loop iteration (one ``writelines`` per connection), so a burst
of fan-out costs each recipient one ``send``, not one per frame. What a transport still holds
counts against the output cap as the outbox's ``held``: reported after every write, and asked
of the transport itself when a frame would not fit. (Holding frames in the outbox while a
transport has paused writing instead cost a third of the fan-out rate: smaller writes, later.)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import ssl
from collections.abc import Callable
from typing import cast

from impl_select.listener import Listener, tune_accepted
from impl_select.tls import TlsFailure, TlsSession, load_server_context
from protocol.cluster import ClusterRules, LinkState, RedisLink
from protocol.options import ServerOptions
from protocol.server import ClientId, Disposal, Outbox, ServerCore
from protocol.serving import EXIT_BAD_CONFIGURATION, announce, peer_host

log = logging.getLogger("impl_asyncio")


class _ClientProtocol(asyncio.Protocol):
    """One accepted connection; hands what it hears to the server."""

    __slots__ = ("client", "outbox", "server", "tls", "transport")

    def __init__(self, server: AsyncioServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.client: ClientId = 0
        self.outbox: Outbox | None = None
        self.tls: TlsSession | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.connected(self)

    def data_received(self, data: bytes) -> None:
        self.server.received(self, data)

    def eof_received(self) -> bool:
        self.server.received(self, b"")
        # Keep the transport open: the core's directives decide how it ends (§9.4).
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.disconnected(self, exc)

    def resume_writing(self) -> None:
        self.server.drained(self)


class _TlsClientProtocol(_ClientProtocol):
    """A connection on a TLS port: what arrives is ciphertext for its :class:`TlsSession`
    (a class of its own, so that the plaintext path pays nothing for TLS)."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        self.server.received_tls(self, data)

    def eof_received(self) -> bool:
        self.server.received_tls(self, b"")
        return True


class _LinkProtocol(asyncio.Protocol):
    """The connection of one of a clustered room's Redis links (§18)."""

    def __init__(self, server: AsyncioServer, link: RedisLink) -> None:
        self.server = server
        self.link = link
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.link_connected(self)

    def data_received(self, data: bytes) -> None:
        self.server.link_received(self, data)

    def eof_received(self) -> bool:
        self.server.link_received(self, b"")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.link_lost(self, exc)


class AsyncioServer:
    """Serves one room until stopped by a signal."""

    def __init__(self, options: ServerOptions, core: ServerCore, tls: ssl.SSLContext | None = None) -> None:
        self.options = options
        self.core = core
        self.tls_context = tls
        self.peers: dict[ClientId, _ClientProtocol] = {}
        self._loop = asyncio.get_running_loop()
        # The one loop timer and its deadline (uvloop returns a plain Handle, without when(),
        # for a deadline already past).
        self._timer: asyncio.Handle | None = None
        self._timer_when = 0.0
        self._flush_scheduled = False
        self._pending_scheduled = False
        self._listener: Listener | None = None
        self._accepting: set[asyncio.Task[object]] = set()  # connect_accepted_socket, running
        self._done = asyncio.Event()  # the core has finished its shutdown
        rules = core.rules
        self.cluster = rules if isinstance(rules, ClusterRules) else None
        self._links: dict[RedisLink, _LinkProtocol] = {}
        self._connecting: set[asyncio.Task[object]] = set()

    async def serve(self) -> int:
        """Listen, serve until SIGINT or SIGTERM, shut down (§12); returns the exit status."""
        loop = self._loop
        try:
            self._listener = Listener(
                self.options.host,
                self.options.port,
                watch=lambda sock: loop.add_reader(sock.fileno(), self._accept),
                unwatch=lambda sock: loop.remove_reader(sock.fileno()),
            )
        except (OSError, OverflowError) as exc:
            log.error("cannot listen on %s:%d: %s", self.options.host, self.options.port, exc)
            return 1
        listener = self._listener
        listener.sync(self.core)
        # Handlers first: whoever reads the listening line may signal at once.
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal, signum)
        announce(*listener.address, self.core)
        if self.cluster is not None:
            self._loop.call_soon(self._flush)  # connects the links
        try:
            await self._done.wait()
        finally:
            listener.close()
            for linked in list(self._links.values()):
                if linked.transport is not None:
                    linked.transport.abort()
            self._links.clear()
            for task in self._connecting:
                task.cancel()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            for peer in list(self.peers.values()):
                assert peer.transport is not None
                peer.transport.abort()
            if self._timer is not None:
                self._timer.cancel()
            # Let the aborted transports run their connection_lost callbacks and close.
            await asyncio.sleep(0)
        log.info("stopped")
        return 0

    def _on_signal(self, signum: int) -> None:
        log.info("%s received", signal.Signals(signum).name)
        # Connections already in the backlog are accepted first: they are told too (§12).
        self._accept()
        self.core.shutdown(self._loop.time())
        self._flush()

    # --- accepting: a batch per readiness event --------------------------------------------

    def _accept(self) -> None:
        """Accept what the listener holds, a batch at a time.

        loop.create_server would do, but uvloop accepts one connection per loop iteration:
        in a join storm every join would then cost a separate flush to every member.
        """
        assert self._listener is not None
        context = self.tls_context
        protocol = _ClientProtocol if context is None else _TlsClientProtocol
        for sock, _ in self._listener.accept(self.core, self._loop.time()):
            task = self._loop.create_task(self._loop.connect_accepted_socket(lambda: protocol(self), sock))
            self._accepting.add(task)
            task.add_done_callback(self._accepted)
        self._schedule_timer()  # an accept error pauses accepting until a deadline

    def _accepted(self, task: asyncio.Task[object]) -> None:
        self._accepting.discard(task)
        if self.core.finished and not self._accepting:
            self._done.set()
        if not task.cancelled() and task.exception() is not None:
            # It never reached the room. Its socket is closed by its transport, or, if none was
            # made, when the socket object is dropped: closing it here could close a reused fd.
            log.info("dropping an accepted connection: %s", task.exception())

    # --- events from the connections --------------------------------------------------------

    def connected(self, peer: _ClientProtocol) -> None:
        transport = peer.transport
        assert transport is not None
        peername = transport.get_extra_info("peername")
        if peername is None:
            transport.abort()  # reset before it could be asked its address
            return
        with contextlib.suppress(OSError):  # already reset: reading will report it
            tune_accepted(transport.get_extra_info("socket"))
        client = self.core.connect(peer_host(str(peername[0])), self._loop.time())
        outbox = self.core.outbox(client)
        if outbox is None:
            transport.abort()  # the core closed it at once (a server may refuse so, §14.2)
            return
        outbox.refresh_held = transport.get_write_buffer_size
        # resume_writing() reports the drain that ends a hold or a congestion (§10.1): the
        # transport pauses writing past half the hold mark (never above the soft limit) and
        # resumes at it.
        half = self.core.hold_mark // 2
        transport.set_write_buffer_limits(high=half, low=half)
        peer.client = client
        peer.outbox = outbox
        context = self.tls_context
        if context is not None:
            peer.tls = TlsSession(context, server_side=True)
        self.peers[client] = peer
        self._schedule_timer()  # its hello timer
        self._schedule_flush()  # a connection made while stopping has its notice queued already

    def received(self, peer: _ClientProtocol, data: bytes) -> None:
        core = self.core
        core.receive(peer.client, data, self._loop.time())
        outbox = peer.outbox
        if outbox is not None and not outbox.reading:
            # At once, not at the flush: uvloop reads a socket up to 32 times per readiness
            # event, and each read would be more input the core holds (§10.1, §14.2).
            self._reading(peer.client, False)
        if core.flush_early:
            self._flush()
        else:
            self._schedule_flush()
            self._schedule_timer()  # input alone can start a timer (§7.5)

    def drained(self, peer: _ClientProtocol) -> None:
        """The transport has written down to its low-water mark: tell the core what it holds."""
        assert peer.transport is not None
        self.core.sent(peer.client, 0, peer.transport.get_write_buffer_size())
        self._schedule_flush()

    def _process_pending(self) -> None:
        self._pending_scheduled = False
        self.core.process_pending(self._loop.time())
        self._flush()

    def received_tls(self, peer: _ClientProtocol, data: bytes) -> None:
        """Ciphertext in: the plaintext to the core, the handshake's answers to the transport."""
        tls = peer.tls
        transport = peer.transport
        if tls is None or transport is None or peer.client not in self.peers:
            return
        try:
            plain, ended = tls.receive(data)
        except TlsFailure as exc:
            # Not TLS (a plaintext client), garbage, a failed handshake: one line, then closed.
            log.info("connection %d: %s; closing", peer.client, exc)
            self._write_tls_output(peer, transport, tls)  # the alert
            del self.peers[peer.client]
            transport.close()
            self.core.connection_lost(peer.client)
            self._schedule_flush()
            return
        self._write_tls_output(peer, transport, tls)
        if plain:
            self.received(peer, plain)
        if ended and peer.outbox is not None and not peer.outbox.eof:
            self.received(peer, b"")

    @staticmethod
    def _write_tls_output(peer: _ClientProtocol, transport: asyncio.Transport, tls: TlsSession) -> None:
        """What the TLS layer has to say (handshake, alerts), unless the write side is shut."""
        output = tls.take_output()
        if output and not (peer.outbox is not None and peer.outbox.shut):
            transport.write(output)

    def _schedule_flush(self) -> None:
        """Flush at the end of this loop iteration, when the core has something to carry out
        or input to handle (a drain that ends a hold lets says go on, §10.1), or has finished
        its shutdown (the flush ends the server), or a clustered room's links may have
        commands to write."""
        core = self.core
        wanted = core.has_output or core.has_pending or core.finished or self.cluster is not None
        if wanted and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def disconnected(self, peer: _ClientProtocol, exc: Exception | None) -> None:
        if self.peers.pop(peer.client, None) is None:
            return  # closed as the core directed, or never a connection of the room
        if exc is not None:
            log.debug("connection %d: %s", peer.client, exc)
        self.core.connection_lost(peer.client)
        self._schedule_flush()

    # --- carrying out what the core says ----------------------------------------------------

    def _flush(self) -> None:
        """Write every outbox that has new output, then carry out the core's directives."""
        self._flush_scheduled = False
        core = self.core
        core.pump(self._write_outbox, self._dispose, self._reading)
        if self.cluster is not None:
            self._sync_links(self.cluster)
            core.pump(self._write_outbox, self._dispose, self._reading)
        if core.has_pending and not self._pending_scheduled:
            # Input the read budget left over (§14.2): handled on the next turn, unasked.
            self._pending_scheduled = True
            self._loop.call_soon(self._process_pending)
        self._schedule_timer()
        if self._listener is not None:
            self._listener.sync(core)
        if core.finished and not self._accepting:
            self._done.set()

    def _write_outbox(self, outbox: Outbox) -> None:
        peer = self.peers.get(outbox.client)
        if peer is not None:
            self._write(peer)

    def _write(self, peer: _ClientProtocol) -> None:
        outbox = peer.outbox
        if outbox is None or not outbox.frames:
            return
        transport = peer.transport
        assert transport is not None
        if peer.tls is not None:
            taken = peer.tls.encrypt(outbox.frames)
            transport.write(peer.tls.take_output())
            self.core.sent(peer.client, taken, transport.get_write_buffer_size())
            return
        # uvloop gathers the frames into one send without joining them first.
        transport.writelines(outbox.frames)
        self.core.sent(peer.client, outbox.size, transport.get_write_buffer_size())

    def _reading(self, client: ClientId, reading: bool) -> None:
        peer = self.peers.get(client)
        if peer is None or peer.transport is None or peer.transport.is_closing():
            return
        if reading:
            peer.transport.resume_reading()
        else:
            peer.transport.pause_reading()

    def _dispose(self, disposal: Disposal, client: ClientId) -> None:
        peer = self.peers.get(client)
        if peer is None:
            return
        transport = peer.transport
        assert transport is not None
        if disposal is Disposal.HALF_CLOSE:
            if peer.tls is not None:
                peer.tls.close()  # close_notify, then FIN (§17.2)
                transport.write(peer.tls.take_output())
            try:
                transport.write_eof()  # after what the transport holds (§9.4 step 3)
            except OSError as exc:
                # The peer went as the half-close was made (ENOTCONN): it is lost, not a bug.
                log.debug("connection %d: %s", client, exc)
                del self.peers[client]
                transport.abort()
                self.core.connection_lost(client)
            return
        del self.peers[client]
        if disposal is Disposal.CLOSE:
            transport.close()  # flushes what the transport still holds
        else:
            transport.abort()

    # --- a clustered room's Redis links: connected, read and written as they say ---------

    def _sync_links(self, cluster: ClusterRules) -> None:
        """Open, close and write each link's connection as the link says, one write per turn."""
        now = self._loop.time()
        for link in cluster.links:
            linked = self._links.get(link)
            if linked is not None and link.wants_close:
                del self._links[link]
                if linked.transport is not None:
                    linked.transport.abort()
                cluster.link_failed(link, now, "closed")
                linked = None
            if linked is None and link.wants_connect(now):
                link.connecting()
                linked = self._links[link] = _LinkProtocol(self, link)
                self._open_link(linked)
            elif linked is not None and linked.transport is not None and link.has_output:
                linked.transport.write(link.take_output())
        core = self.core
        core.settle(now)

    def _open_link(self, linked: _LinkProtocol) -> None:
        link = linked.link
        task: asyncio.Task[object] = self._loop.create_task(
            self._loop.create_connection(lambda: linked, link.host, link.port)
        )
        self._connecting.add(task)
        task.add_done_callback(lambda done: self._link_opened(linked, done))

    def _link_opened(self, linked: _LinkProtocol, task: asyncio.Task[object]) -> None:
        self._connecting.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        if self._links.get(linked.link) is linked:
            del self._links[linked.link]
            assert self.cluster is not None
            self.cluster.link_failed(linked.link, self._loop.time(), str(task.exception()))
            self._flush()

    def link_connected(self, linked: _LinkProtocol) -> None:
        if self._links.get(linked.link) is not linked or self.cluster is None:
            return
        # asyncio's and uvloop's TCP transports turn Nagle's algorithm off themselves.
        self.cluster.link_connected(linked.link, self._loop.time())
        self._flush()

    def link_received(self, linked: _LinkProtocol, data: bytes) -> None:
        if self._links.get(linked.link) is not linked or self.cluster is None:
            return
        if not data:
            del self._links[linked.link]
        self.cluster.link_received(linked.link, data, self._loop.time())
        self.core.settle(self._loop.time())
        self._schedule_flush()

    def link_lost(self, linked: _LinkProtocol, exc: Exception | None) -> None:
        if self._links.get(linked.link) is not linked or self.cluster is None:
            return
        del self._links[linked.link]
        if linked.link.state is not LinkState.DOWN:
            self.cluster.link_failed(linked.link, self._loop.time(), str(exc or "closed by Redis"))
        self._flush()

    # --- the core's timers: one loop timer for its next deadline ---------------------------

    def _schedule_timer(self) -> None:
        when = self.core.next_deadline()
        if when is None:
            return
        if self._timer is not None:
            if self._timer_when <= when:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)
        self._timer_when = when

    def _on_timer(self) -> None:
        self._timer = None
        self.core.expire(self._loop.time())
        self._flush()


async def _serve(options: ServerOptions, core: ServerCore, tls: ssl.SSLContext | None) -> int:
    return await AsyncioServer(options, core, tls).serve()


#: The event loops ``--loop`` can choose besides ``auto`` (uvloop when it is installed).
LOOPS = ("asyncio", "uvloop")


def loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the event loop ``loop`` names (``None``: asyncio's own). ``auto`` is uvloop
    when it is installed; ``uvloop`` raises ImportError when it is not."""
    if loop == "asyncio":
        return None
    try:
        # Optional (the "uvloop" extra); imported by name so that type checking needs no stubs.
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if loop == "uvloop":
            raise
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    log.info("using uvloop %s", uvloop.__version__)
    return factory


def run(options: ServerOptions, core: ServerCore) -> int:
    """Serve until stopped by a signal; returns the exit status. Runs on the event loop
    ``options.loop`` names (:func:`loop_factory`)."""
    try:
        tls = load_server_context(options)
    except TlsFailure as exc:
        log.error("cannot serve TLS: %s", exc)
        return EXIT_BAD_CONFIGURATION
    try:
        factory = loop_factory(options.loop)
    except ImportError:
        log.error("--loop uvloop: uvloop is not installed (pip install 'chatwire[uvloop]')")
        return EXIT_BAD_CONFIGURATION
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_serve(options, core, tls))
