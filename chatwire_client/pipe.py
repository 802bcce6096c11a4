"""Pipe mode: stdin is not a terminal, so every line read is said, and what arrives is printed.

Blank lines (empty, or only whitespace) are not said. At the end of input the client pings
and waits for the pong (a barrier: the server has then processed every say before it), then
closes cleanly. What happens in the room (messages, joins, departures) goes to stdout; this
client's own status (connected, shutdown) and errors go to stderr; one per line, unstyled,
so the client can be scripted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
import threading
from collections.abc import Callable
from typing import TextIO

from protocol import Codec

from .link import Link, Server
from .session import ChatSession, ExitStatus, Line, Style, blank

# A line longer than max_frame cannot be sent, so it is dropped instead of buffered whole.
_TOO_LONG = object()
_QUEUE_DEPTH = 64


_STDOUT_STYLES = frozenset({Style.CHAT, Style.NOTICE})


def _print(line: Line) -> None:
    stream: TextIO = sys.stdout if line.style in _STDOUT_STYLES else sys.stderr
    stream.write(line.text + "\n")
    stream.flush()


def _read_lines(fd: int, limit: int, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object]) -> None:
    """Runs in a thread: put each line of ``fd`` (bytes, without its newline), then ``None``.

    os.read rather than sys.stdin: a daemon thread blocked inside a buffered file's lock can
    abort the interpreter at exit when the session ends before the input does.
    """

    def put(item: object) -> None:
        # Blocks while the queue is full: the input cannot outrun the connection.
        asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

    # If the session ended first, its loop is gone and put fails: nobody wants the rest.
    with contextlib.suppress(Exception):
        _split_lines(fd, limit, put)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 16)
    except OSError:  # e.g. stdin was closed: as good as its end
        return b""


def _split_lines(fd: int, limit: int, put: Callable[[object], None]) -> None:
    pending = bytearray()
    skipping = False
    while chunk := _read(fd):
        start, search = 0, len(pending)
        pending += chunk
        while (end := pending.find(b"\n", search)) >= 0:
            put(_TOO_LONG if skipping or end - start > limit else bytes(pending[start:end]))
            skipping = False
            start = search = end + 1
        del pending[:start]
        if len(pending) > limit:
            skipping = True
            pending.clear()
    if pending or skipping:
        put(_TOO_LONG if skipping else bytes(pending))
    put(None)


async def run_pipe(server: Server, name: str, codec: Codec, timeout: float) -> ExitStatus:
    """Join as ``name``, say every line of stdin, wait for the barrier, leave.

    Raises :class:`~chatwire_client.link.NoAnswer` if the connection, the welcome or the
    barrier's pong takes longer than ``timeout`` seconds.
    """
    session = ChatSession(codec, token=server.token, tls=server.tls is not None)
    link = await Link.open(server, session, _print, timeout)
    receiving = asyncio.create_task(link.run())
    try:
        await link.send(session.hello(name))
        await link.expect(lambda: session.hello_answered, timeout, "welcome")
        if session.refusal is not None:
            return ExitStatus.NAME_REFUSED
        if not session.joined:
            return session.status or ExitStatus.CONNECTION_LOST
        await _say_stdin(link, session)
        if not session.finished:
            await link.send(session.barrier())
            await link.expect(
                lambda: session.barrier_passed or session.finished, timeout, "answer to the final ping"
            )
        return session.status or ExitStatus.OK
    finally:
        session.quit()  # from here on, the server's end of stream is expected
        await link.close()
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiving


async def _say_stdin(link: Link, session: ChatSession) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue(_QUEUE_DEPTH)
    limit = session.connection.send_limit
    threading.Thread(target=_read_lines, args=(0, limit, loop, queue), daemon=True).start()
    too_long = f"too long for this server (at most {limit} bytes per frame)"
    ending = asyncio.create_task(link.until(lambda: session.finished))
    try:
        for number in itertools.count(1):
            getting = asyncio.ensure_future(queue.get())
            await asyncio.wait((getting, ending), return_when=asyncio.FIRST_COMPLETED)
            if not getting.done():
                getting.cancel()
                return
            item = getting.result()
            if item is None:
                return
            if item is _TOO_LONG:
                _print(Line(Style.ERROR, f"line {number} not sent: {too_long}"))
                continue
            assert isinstance(item, bytes)
            text = item.decode("utf-8", errors="replace")
            if blank(text):
                continue
            step = session.say(text)
            for line in step.lines:
                _print(Line(line.style, f"line {number} {line.text}"))
            await link.send(step.send)
    finally:
        ending.cancel()
