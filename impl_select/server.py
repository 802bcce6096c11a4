"""The selectors-based server: one thread, non-blocking sockets.

Only I/O: :class:`protocol.server.ServerCore` decides everything, this loop accepts, reads,
writes what the core's outboxes hold (gathered with ``sendmsg``), carries out the core's
directives and wakes it when its next deadline comes. Output is written once per loop
iteration, so a message fanned out to many members in one iteration costs each of them one
``send``, however many frames it carries.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import signal
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from protocol.cluster import ClusterRules, LinkState, RedisLink
from protocol.options import ServerOptions
from protocol.server import ClientId, Disposal, Outbox, ServerCore
from protocol.serving import EXIT_BAD_CONFIGURATION, announce, peer_host

from .listener import Listener, connect_nonblocking, tune_accepted
from .tls import TlsFailure, TlsSession, load_server_context

log = logging.getLogger("impl_select")

READ_SIZE = 65536
#: Buffers handed to one ``sendmsg``: Linux's IOV_MAX.
SEND_BUFFERS = 1024

_Handler = Callable[[int, FrameType | None], Any] | int | None

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE


class _Peer:
    """One accepted connection: its socket, its outbox in the core, its selector registration,
    and with TLS its session and the ciphertext not yet written."""

    __slots__ = ("cipher", "client", "events", "outbox", "shut_pending", "sock", "tls")

    def __init__(self, sock: socket.socket, outbox: Outbox, tls: TlsSession | None = None) -> None:
        self.sock = sock
        self.outbox = outbox
        self.client = outbox.client
        self.events = 0  # as registered with the selector; 0 = not registered
        self.tls = tls
        self.cipher = bytearray()  # TLS records the socket has not taken yet
        self.shut_pending = False  # HALF_CLOSE directed: FIN once the cipher is written


class _LinkSocket:
    """The socket of one of a clustered room's Redis links (§18), and octets it has yet to take."""

    __slots__ = ("link", "pending", "sock")

    def __init__(self, link: RedisLink, sock: socket.socket) -> None:
        self.link = link
        self.sock = sock
        self.pending = b""


class SelectServer:
    """Serves one room on one listening socket until a signal stops it."""

    def __init__(self, options: ServerOptions, core: ServerCore, tls: ssl.SSLContext | None = None) -> None:
        self.options = options
        self.core = core
        self.tls_context = tls
        self.selector = selectors.DefaultSelector()
        self.listener = Listener(
            options.host,
            options.port,
            watch=lambda sock: self.selector.register(sock, _READ, self._accept),
            unwatch=self.selector.unregister,
        )
        self.peers: dict[ClientId, _Peer] = {}
        self._writable: list[_Peer] = []  # reported writable in this iteration
        self._now = time.monotonic()
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        rules = core.rules
        self.cluster = rules if isinstance(rules, ClusterRules) else None
        self._links: dict[RedisLink, _LinkSocket] = {}

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.address

    # --- the loop ---------------------------------------------------------------------------

    def serve_forever(self) -> int:
        """Run until SIGINT or SIGTERM and the shutdown that follows; returns the exit status."""
        self.selector.register(self._wakeup_r, _READ, self._on_wakeup)
        self.listener.sync(self.core)
        previous = self._install_signal_handlers()
        announce(*self.address, self.core)
        core = self.core
        try:
            while not core.finished:
                for key, mask in self.selector.select(self._timeout()):
                    self._now = time.monotonic()
                    if isinstance(key.data, _Peer):
                        self._on_ready(key.data, mask)
                    elif isinstance(key.data, _LinkSocket):
                        self._on_link(key.data, mask)
                    else:
                        key.data()
                    if core.flush_early:
                        self._flush()
                self._now = time.monotonic()
                if core.has_pending:
                    # Input the read budget left over (§14.2): handled this turn, unasked.
                    core.process_pending(self._now)
                core.expire(self._now)
                self._flush()
                self.listener.sync(self.core)
        finally:
            for peer in list(self.peers.values()):
                self._forget(peer)
            for linked in list(self._links.values()):
                self._close_link(linked)
            self.listener.close()
            self._restore_signal_handlers(previous)
            self.selector.close()
            self._wakeup_r.close()
            self._wakeup_w.close()
        log.info("stopped")
        return 0

    def _timeout(self) -> float | None:
        if self.core.has_pending:
            return 0.0
        deadline = self.core.next_deadline()
        if deadline is None:
            return None
        return max(0.0, deadline - time.monotonic())

    def _flush(self) -> None:
        """Write every connection that became writable or has new output, then carry out the
        core's directives."""
        writable, self._writable = self._writable, []
        for peer in writable:
            if peer.client in self.peers:
                self._write(peer)
        self.core.pump(self._write_outbox, self._dispose, self._reading)
        if self.cluster is not None:
            self._sync_links(self.cluster)
            self.core.pump(self._write_outbox, self._dispose, self._reading)

    def _reading(self, client: ClientId, reading: bool) -> None:
        peer = self.peers.get(client)
        if peer is not None:
            self._update_events(peer)

    def _write_outbox(self, outbox: Outbox) -> None:
        peer = self.peers.get(outbox.client)
        if peer is not None:
            self._write(peer)

    # --- signals -----------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[int, _Handler]:
        # The C-level handler writes the signal number to the wakeup socket, which wakes the
        # selector; the Python-level handler only has to exist (and not raise).
        signal.set_wakeup_fd(self._wakeup_w.fileno(), warn_on_full_buffer=False)
        previous: dict[int, _Handler] = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, _ignore_signal)
        return previous

    def _restore_signal_handlers(self, previous: dict[int, _Handler]) -> None:
        signal.set_wakeup_fd(-1)
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)

    def _on_wakeup(self) -> None:
        try:
            data = self._wakeup_r.recv(512)
        except (BlockingIOError, InterruptedError):
            return
        for signum in data:
            log.info("%s received", signal.Signals(signum).name)
            self.stop()

    def stop(self) -> None:
        """Stop accepting and shut down (§12); a second call closes every connection at once."""
        # Connections already in the backlog are accepted first: they are told too.
        self._now = time.monotonic()
        self._accept()
        self.core.shutdown(self._now)
        self.listener.sync(self.core)

    # --- accepting ---------------------------------------------------------------------------

    def _accept(self) -> None:
        core = self.core
        for sock, address in self.listener.accept(core, self._now):
            try:
                sock.setblocking(False)
                tune_accepted(sock)
            except OSError as exc:
                log.info("dropping connection from %s: %s", address, exc)
                sock.close()
                continue
            client = core.connect(peer_host(address), self._now)
            outbox = core.outbox(client)
            if outbox is None:
                sock.close()  # the core closed it at once (a server may refuse so, §14.2)
                continue
            context = self.tls_context
            peer = _Peer(sock, outbox, None if context is None else TlsSession(context, server_side=True))
            if peer.tls is not None:
                # Ciphertext the socket has not taken counts against the cap, as asyncio's
                # transport buffer does (§10).
                outbox.refresh_held = peer.cipher.__len__
            self.peers[client] = peer
            self._set_events(peer, _READ)

    # --- reading and writing -----------------------------------------------------------------

    def _on_ready(self, peer: _Peer, mask: int) -> None:
        if peer.client not in self.peers:
            return  # closed by an earlier event of the same batch
        if mask & _READ and peer.outbox.reading:
            try:
                data = peer.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._lost(peer, exc)
                return
            if peer.tls is not None:
                self._receive_tls(peer, peer.tls, data)
            else:
                self.core.receive(peer.client, data, self._now)
            if not data:
                self._update_events(peer)
        if mask & _WRITE:
            # Written with the others at the end of the iteration, with whatever it gathers
            # meanwhile: one send per connection per iteration.
            self._writable.append(peer)

    def _receive_tls(self, peer: _Peer, tls: TlsSession, data: bytes) -> None:
        """Ciphertext in: the plaintext to the core, the handshake's answers to the socket."""
        try:
            plain, ended = tls.receive(data)
        except TlsFailure as exc:
            # Not TLS (a plaintext client), garbage, a failed handshake: one line, then closed.
            log.info("connection %d: %s; closing", peer.client, exc)
            with contextlib.suppress(OSError):
                peer.sock.send(tls.take_output())  # the alert, if the socket takes it
            self._forget(peer)
            self.core.connection_lost(peer.client)
            return
        if plain:
            self.core.receive(peer.client, plain, self._now)
        if ended and not peer.outbox.eof:
            self.core.receive(peer.client, b"", self._now)
        if tls.pending_output and peer.client in self.peers:
            self._writable.append(peer)

    def _write(self, peer: _Peer) -> None:
        if peer.tls is not None:
            self._write_tls(peer, peer.tls)
            return
        frames = peer.outbox.frames
        if frames:
            sent = self._send(peer, frames)
            if sent is None:
                return
            self.core.sent(peer.client, sent)
        self._update_events(peer)

    def _send(self, peer: _Peer, buffers: Sequence[bytes | bytearray | memoryview]) -> int | None:
        """Write what the socket takes of ``buffers`` (the first ``SEND_BUFFERS`` of them);
        None if that lost the connection."""
        try:
            if len(buffers) == 1:
                return peer.sock.send(buffers[0])
            return peer.sock.sendmsg(buffers[:SEND_BUFFERS])
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._lost(peer, exc)
            return None

    def _write_tls(self, peer: _Peer, tls: TlsSession) -> None:
        outbox = peer.outbox
        taken = tls.encrypt(outbox.frames) if outbox.frames else 0
        cipher = peer.cipher
        cipher += tls.take_output()
        sent: int | None = 0
        if cipher:
            sent = self._send(peer, (cipher,))
            if sent is None:
                return
            del cipher[:sent]
        if taken or sent:
            # The ciphertext still unsent is held against the caps (§10, §10.1); its draining
            # alone can end a congestion.
            self.core.sent(peer.client, taken, len(cipher))
        if peer.shut_pending and not cipher and peer.client in self.peers:
            peer.shut_pending = False
            self._shut_write(peer)
        self._update_events(peer)

    # --- a clustered room's Redis links: sockets opened, read and written as they say -------

    def _sync_links(self, cluster: ClusterRules) -> None:
        """Open, close and write each link's socket as the link says, in one write per turn."""
        now = time.monotonic()
        for link in cluster.links:
            linked = self._links.get(link)
            if linked is not None and link.wants_close:
                self._close_link(linked)
                cluster.link_failed(link, now, "closed")
                linked = None
            if linked is None and link.wants_connect(now):
                try:
                    sock = connect_nonblocking(link.host, link.port)
                except OSError as exc:
                    link.connecting()
                    cluster.link_failed(link, now, str(exc))
                    continue
                link.connecting()
                linked = self._links[link] = _LinkSocket(link, sock)
                self.selector.register(sock, _WRITE, linked)
            elif linked is not None and link.state is LinkState.UP and (linked.pending or link.has_output):
                self._write_link(linked)
        self.core.settle(now)

    def _on_link(self, linked: _LinkSocket, mask: int) -> None:
        cluster = self.cluster
        assert cluster is not None
        link = linked.link
        if link.state is LinkState.CONNECTING:
            error = linked.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self._close_link(linked)
                cluster.link_failed(link, self._now, os.strerror(error))
            else:
                self.selector.modify(linked.sock, _READ, linked)
                cluster.link_connected(link, self._now)
        elif mask & _READ:
            try:
                data = linked.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._close_link(linked)
                cluster.link_failed(link, self._now, str(exc))
            else:
                if not data:
                    self._close_link(linked)
                cluster.link_received(link, data, self._now)
        if mask & _WRITE and linked.pending and link.state is LinkState.UP:
            self._write_link(linked)
        self.core.settle(self._now)

    def _write_link(self, linked: _LinkSocket) -> None:
        data = linked.pending + linked.link.take_output()
        try:
            sent = linked.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            assert self.cluster is not None
            self._close_link(linked)
            self.cluster.link_failed(linked.link, time.monotonic(), str(exc))
            return
        linked.pending = data[sent:]
        self.selector.modify(linked.sock, _READ | (_WRITE if linked.pending else 0), linked)

    def _close_link(self, linked: _LinkSocket) -> None:
        if self._links.pop(linked.link, None) is None:
            return
        self.selector.unregister(linked.sock)
        linked.sock.close()

    # --- closing -----------------------------------------------------------------------------

    def _dispose(self, disposal: Disposal, client: ClientId) -> None:
        peer = self.peers.get(client)
        if peer is None:
            return
        if disposal is Disposal.HALF_CLOSE:
            if peer.tls is not None:
                # close_notify first, then FIN once the socket has taken every record (§17.2).
                peer.tls.close()
                peer.shut_pending = True
                self._write_tls(peer, peer.tls)
                return
            self._shut_write(peer)
        else:
            # CLOSE follows the end of the peer's stream, so closing sends FIN, not RST.
            self._forget(peer)

    def _shut_write(self, peer: _Peer) -> None:
        try:
            peer.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._lost(peer, exc)
            return
        self._update_events(peer)

    def _lost(self, peer: _Peer, exc: OSError) -> None:
        """A socket error: the connection is gone at once, nothing is flushed."""
        if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
            log.info("connection %d: %s", peer.client, exc)
        self._forget(peer)
        self.core.connection_lost(peer.client)

    def _forget(self, peer: _Peer) -> None:
        if self.peers.pop(peer.client, None) is None:
            return
        self._set_events(peer, 0)
        peer.sock.close()

    def _update_events(self, peer: _Peer) -> None:
        outbox = peer.outbox
        if peer.client in self.peers:
            reading = _READ if outbox.reading and not outbox.eof else 0
            writing = outbox.frames or peer.cipher
            self._set_events(peer, reading | (_WRITE if writing else 0))

    def _set_events(self, peer: _Peer, events: int) -> None:
        if events == peer.events:
            return
        if peer.events == 0:
            self.selector.register(peer.sock, events, peer)
        elif events == 0:
            self.selector.unregister(peer.sock)
        else:
            self.selector.modify(peer.sock, events, peer)
        peer.events = events


def _ignore_signal(signum: int, frame: FrameType | None) -> None:
    """Installed for SIGINT/SIGTERM so that they only wake the selector (see set_wakeup_fd)."""


def run(options: ServerOptions, core: ServerCore) -> int:
    """Listen, serve until stopped by a signal, return the exit status."""
    try:
        tls = load_server_context(options)
    except TlsFailure as exc:
        log.error("cannot serve TLS: %s", exc)
        return EXIT_BAD_CONFIGURATION
    try:
        server = SelectServer(options, core, tls)
    except (OSError, OverflowError) as exc:
        log.error("cannot listen on %s:%d: %s", options.host, options.port, exc)
        return 1
    return server.serve_forever()
