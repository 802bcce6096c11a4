"""The selectors-based server: one thread, non-blocking sockets, per-client output buffers.

Every protocol and room decision is :class:`protocol.ServerCore`'s; this module moves bytes
and runs timers. Output is appended to per-client buffers while events are handled and
written once per loop iteration, so a message fanned out to many members in one iteration
costs each of them one ``send``, however many frames it carries.
"""

from __future__ import annotations

import errno
import logging
import selectors
import signal
import socket
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from protocol import ClientId, ServerCore, dispatch
from protocol.constants import CLOSE_LINGER, SHUTDOWN_FLUSH_TIMEOUT
from protocol.options import ServerOptions
from protocol.serving import LISTEN_BACKLOG, Deadlines, listening_line, peer_host

log = logging.getLogger("impl_select")

READ_SIZE = 65536
#: Buffers handed to one ``sendmsg``: Linux's IOV_MAX.
SEND_BUFFERS = 1024
#: Bytes queued for one connection that make the server write before the loop iteration ends:
#: every ready socket gives READ_SIZE per iteration, and with many senders the output for
#: one recipient would otherwise grow with their number (and could pass the cap, §10).
FLUSH_EARLY = 256 * 1024
#: Connections accepted per readiness event, so an accept storm cannot starve the others.
ACCEPT_BATCH = 256
#: Pause after an accept error such as EMFILE: the listener stays readable, and retrying
#: at once would spin.
ACCEPT_BACKOFF = 0.1

_Handler = Callable[[int, FrameType | None], Any] | int | None

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE


class _Peer:
    """One accepted connection: its socket, queued output and where it is in closing."""

    __slots__ = ("client", "closing", "dirty", "eof", "events", "output", "queued", "shut", "sock")

    def __init__(self, sock: socket.socket, client: ClientId) -> None:
        self.sock = sock
        self.client = client
        # Frames not yet accepted by the kernel. A frame fanned out to many peers is one bytes
        # object in all their queues: queuing it copies nothing, and sendmsg gathers it.
        self.output: list[bytes | memoryview] = []
        self.queued = 0  # bytes in output
        self.events = 0  # as registered with the selector; 0 = not registered
        self.dirty = False  # queued for the flush at the end of this loop iteration
        self.closing = False  # the core is done with it: input is discarded, writes dropped
        self.shut = False  # shutdown(SHUT_WR) done
        self.eof = False  # the peer's end of stream was read


class SelectServer:
    """Serves one room on one listening socket until a signal stops it.

    Also the :class:`protocol.Transport` that :func:`protocol.dispatch` writes to.
    """

    def __init__(self, options: ServerOptions, core: ServerCore) -> None:
        self.options = options
        self.core = core
        self.listener = self._listen(options.host, options.port)
        self.selector = selectors.DefaultSelector()
        self.peers: dict[ClientId, _Peer] = {}
        self._dirty: list[_Peer] = []
        self._flush_early = False  # a queue passed FLUSH_EARLY: flush before the iteration ends
        self._hello: Deadlines[ClientId] = Deadlines(options.hello_timeout)
        self._closing: Deadlines[ClientId] = Deadlines(CLOSE_LINGER)
        self._accept_paused_until: float | None = None
        self._stop_deadline: float | None = None
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return host, port

    def _listen(self, host: str, port: int) -> socket.socket:
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

    # --- the loop ---------------------------------------------------------------------------

    def serve_forever(self) -> int:
        """Run until SIGINT or SIGTERM and the shutdown that follows; returns the exit status."""
        self.selector.register(self.listener, _READ, self._accept)
        self.selector.register(self._wakeup_r, _READ, self._on_wakeup)
        previous = self._install_signal_handlers()
        host, port = self.address
        log.info("serving on %s:%d (codec %s)", host, port, self.core.codec.name.value)
        print(listening_line(host, port), flush=True)
        try:
            while not self._finished():
                timeout = self._timeout()
                for key, mask in self.selector.select(timeout):
                    if isinstance(key.data, _Peer):
                        self._on_ready(key.data, mask)
                    else:
                        key.data()
                    if self._flush_early:
                        self._flush()
                self._expire_timers()
                self._flush()
        finally:
            self._abort_all()
            self._restore_signal_handlers(previous)
            self.selector.close()
            self._wakeup_r.close()
            self._wakeup_w.close()
        log.info("stopped")
        return 0

    def _finished(self) -> bool:
        if self._stop_deadline is None:
            return False
        if not self.peers:
            return True
        if time.monotonic() >= self._stop_deadline:
            log.warning("shutdown flush timed out; closing %d connections", len(self.peers))
            return True
        return False

    def _timeout(self) -> float | None:
        deadlines = [
            d
            for d in (
                self._hello.next_deadline(),
                self._closing.next_deadline(),
                self._accept_paused_until,
                self._stop_deadline,
            )
            if d is not None
        ]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _expire_timers(self) -> None:
        now = time.monotonic()
        for client in self._hello.expire(now):
            dispatch(self.core, self.core.hello_timeout(client), self, self.options.max_output_buffer)
        for client in self._closing.expire(now):
            peer = self.peers.get(client)
            if peer is not None:
                self._close_now(peer)
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            self.selector.register(self.listener, _READ, self._accept)

    # --- signals and shutdown ----------------------------------------------------------------

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
            if self._stop_deadline is None:
                log.info("%s: shutting down", signal.Signals(signum).name)
                self.stop()
            else:
                log.warning("%s again: closing every connection now", signal.Signals(signum).name)
                self._stop_deadline = time.monotonic()

    def stop(self) -> None:
        """Stop accepting, send every connection ``shutdown`` and start the bounded flush (§12)."""
        if self._stop_deadline is not None:
            return
        self._stop_deadline = time.monotonic() + SHUTDOWN_FLUSH_TIMEOUT
        if self._accept_paused_until is None:
            self.selector.unregister(self.listener)
        self._accept_paused_until = None
        self.listener.close()
        dispatch(self.core, self.core.shutdown(), self, self.options.max_output_buffer)

    def _abort_all(self) -> None:
        for peer in list(self.peers.values()):
            self._close_now(peer)
        if self.listener.fileno() >= 0:
            self.listener.close()

    # --- accepting ---------------------------------------------------------------------------

    def _accept(self) -> None:
        if self._stop_deadline is not None:
            return  # the listener was closed by a signal handled earlier in this batch
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                # EMFILE, ENFILE, ENOBUFS...: keep serving the connections there are.
                log.error("accept failed: %s; pausing accepts for %.1f s", exc, ACCEPT_BACKOFF)
                self.selector.unregister(self.listener)
                self._accept_paused_until = time.monotonic() + ACCEPT_BACKOFF
                return
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as exc:
                log.info("dropping connection from %s: %s", address[0], exc)
                sock.close()
                continue
            client = self.core.connect(peer_host(address[0]))
            peer = _Peer(sock, client)
            self.peers[client] = peer
            self._hello.arm(client, time.monotonic())
            self._set_events(peer, _READ)

    # --- reading -----------------------------------------------------------------------------

    def _on_ready(self, peer: _Peer, mask: int) -> None:
        if peer.client not in self.peers:
            return  # closed by an earlier event of the same batch
        if mask & _READ:
            self._read(peer)
        if mask & _WRITE:
            self._mark_dirty(peer)

    def _read(self, peer: _Peer) -> None:
        try:
            data = peer.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(peer, exc)
            return
        if not data:
            peer.eof = True
            self._update_events(peer)
        if peer.closing:
            # Draining after a half-close (§9.4 step 4): input is discarded; EOF ends it.
            if peer.eof and peer.shut:
                self._close_now(peer)
            return
        dispatch(self.core, self.core.receive(peer.client, data), self, self.options.max_output_buffer)

    def _lost(self, peer: _Peer, exc: OSError) -> None:
        """A socket error: the connection is gone at once, nothing is flushed."""
        if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
            log.info("connection %d: %s", peer.client, exc)
        closing = peer.closing
        self._close_now(peer)
        if not closing:
            dispatch(self.core, self.core.connection_lost(peer.client), self, self.options.max_output_buffer)

    # --- writing -----------------------------------------------------------------------------

    def _mark_dirty(self, peer: _Peer) -> None:
        if not peer.dirty:
            peer.dirty = True
            self._dirty.append(peer)

    def _flush(self) -> None:
        """Give every connection with new output (or writable again) one ``send``."""
        self._flush_early = False
        while self._dirty:
            batch, self._dirty = self._dirty, []
            for peer in batch:
                peer.dirty = False
                if peer.client in self.peers:
                    self._flush_peer(peer)

    def _flush_peer(self, peer: _Peer) -> None:
        output = peer.output
        if output:
            try:
                if len(output) == 1:
                    sent = peer.sock.send(output[0])
                else:
                    sent = peer.sock.sendmsg(output[:SEND_BUFFERS])
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._lost(peer, exc)
                return
            peer.queued -= sent
            if peer.queued:
                _drop_sent(output, sent)
            else:
                output.clear()
        if not output and peer.closing and not peer.shut:
            # Flushed: half-close (§9.4 step 3), then drain until EOF unless it came already.
            try:
                peer.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self._close_now(peer)
                return
            peer.shut = True
            if peer.eof:
                self._close_now(peer)
                return
        self._update_events(peer)

    # --- closing -----------------------------------------------------------------------------

    def _close_now(self, peer: _Peer) -> None:
        """Close the socket and forget everything about the connection."""
        if self.peers.pop(peer.client, None) is None:
            return
        self._hello.cancel(peer.client)
        self._closing.cancel(peer.client)
        self._set_events(peer, 0)
        peer.output = []
        peer.queued = 0
        peer.closing = True
        peer.sock.close()

    def _update_events(self, peer: _Peer) -> None:
        self._set_events(peer, (0 if peer.eof else _READ) | (_WRITE if peer.output else 0))

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

    # --- protocol.Transport ------------------------------------------------------------------

    def write(self, client: ClientId, data: bytes) -> None:
        peer = self.peers.get(client)
        if peer is not None and not peer.closing:
            peer.output.append(data)
            peer.queued += len(data)
            if not peer.events & _WRITE:  # else the kernel is full: wait for EVENT_WRITE
                self._mark_dirty(peer)
                if peer.queued > FLUSH_EARLY:
                    self._flush_early = True

    def buffered(self, client: ClientId) -> int:
        peer = self.peers.get(client)
        return peer.queued if peer is not None else 0

    def fan_out(
        self, data: bytes, clients: Sequence[ClientId], exclude: ClientId | None, limit: int
    ) -> list[ClientId]:
        """:func:`protocol.server.fan_out_each` over this server's peers, in one loop."""
        over: list[ClientId] = []
        peers = self.peers
        dirty = self._dirty
        size = len(data)
        for client in clients:
            if client == exclude:
                continue
            peer = peers.get(client)
            if peer is None or peer.closing:
                continue
            if peer.queued > limit:
                over.append(client)
                continue
            peer.output.append(data)
            peer.queued += size
            if not peer.events & _WRITE:  # else the kernel is full: wait for EVENT_WRITE
                if not peer.dirty:
                    peer.dirty = True
                    dirty.append(peer)
                if peer.queued > FLUSH_EARLY:
                    self._flush_early = True
        return over

    def close(self, client: ClientId, flush: bool) -> None:
        peer = self.peers.get(client)
        if peer is None or peer.closing:
            return
        if not flush:
            self._close_now(peer)
            return
        # §9.4: flush, half-close, drain until EOF; all of it bounded by CLOSE_LINGER.
        peer.closing = True
        self._hello.cancel(client)
        self._closing.arm(client, time.monotonic())
        self._mark_dirty(peer)


def _drop_sent(output: list[bytes | memoryview], sent: int) -> None:
    """Remove the first ``sent`` bytes from ``output``, whole buffers and then part of one."""
    done = 0
    while sent:
        size = len(output[done])
        if sent < size:
            output[done] = memoryview(output[done])[sent:]
            break
        sent -= size
        done += 1
    del output[:done]


def _ignore_signal(signum: int, frame: FrameType | None) -> None:
    """Installed for SIGINT/SIGTERM so that they only wake the selector (see set_wakeup_fd)."""


def run(options: ServerOptions, core: ServerCore) -> int:
    """Listen, serve until stopped by a signal, return the exit status."""
    try:
        server = SelectServer(options, core)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", options.host, options.port, exc)
        return 1
    return server.serve_forever()
