"""Run a bundled server with its output buffers measured after every core event.

``python tests/capcheck.py IMPL [--mutant NAME] [server options]`` serves exactly as
``python -m IMPL`` would, and writes ``cap exceeded: N > CAP`` to stderr whenever a
connection's buffered octets (§10: its outbox, plus what its asyncio transport still holds,
asked of the transport itself) pass ``--max-output-buffer``. Used by tests/test_output_cap.py,
with mutants that break the cap to show that the check sees it.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable
from typing import Any

from protocol.server import ServerCore

_servers: list[Any] = []  # the AsyncioServer, once made


def _buffered(core: ServerCore, client: int) -> int:
    outbox = core.outbox(client)
    if outbox is None:
        return 0
    for server in _servers:
        peer = server.peers.get(client)
        if peer is not None and peer.transport is not None:
            return outbox.size + int(peer.transport.get_write_buffer_size())
    return outbox.size


def _check_after(method: str, cap: int) -> None:
    original = getattr(ServerCore, method)

    def checked(self: ServerCore, *args: Any) -> Any:
        result = original(self, *args)
        for client in list(self._outboxes):
            buffered = _buffered(self, client)
            if buffered > cap:
                sys.stderr.write(f"cap exceeded: {buffered} > {cap}\n")
        return result

    setattr(ServerCore, method, checked)


def _core_one_frame_over() -> None:
    """The core lets a queue pass the cap by one frame."""
    original: Callable[..., list[int]] = ServerCore._fan_out

    def fan_out(self: ServerCore, data: bytes, *args: Any) -> list[int]:
        self.max_output_buffer += len(data)
        try:
            return original(self, data, *args)
        finally:
            self.max_output_buffer -= len(data)

    setattr(ServerCore, "_fan_out", fan_out)  # noqa: B010


def _asyncio_ignores_held() -> None:
    """The asyncio server does not tell the core what its transports still hold."""
    import impl_asyncio.server as module  # noqa: PLC0415 (only this mutant needs it)

    def write(self: Any, peer: Any) -> None:
        outbox = peer.outbox
        if outbox is None or not outbox.frames:
            return
        outbox.refresh_held = None
        peer.transport.writelines(outbox.frames)
        self.core.sent(peer.client, outbox.size, 0)

    setattr(module.AsyncioServer, "_write", write)  # noqa: B010


MUTANTS: dict[str, Callable[[], None]] = {
    "core_one_frame_over": _core_one_frame_over,
    "asyncio_ignores_held": _asyncio_ignores_held,
}


def main() -> None:
    impl, args = sys.argv[1], sys.argv[2:]
    if args[:1] == ["--mutant"]:
        MUTANTS[args[1]]()
        args = args[2:]
    cap = int(args[args.index("--max-output-buffer") + 1])
    for method in ("connect", "receive", "sent", "connection_lost", "expire", "shutdown"):
        _check_after(method, cap)
    if impl == "impl_asyncio":
        import impl_asyncio.server as module  # noqa: PLC0415

        original_init = module.AsyncioServer.__init__

        def init(self: Any, *init_args: Any) -> None:
            original_init(self, *init_args)
            _servers.append(self)

        setattr(module.AsyncioServer, "__init__", init)  # noqa: B010
    sys.argv = [impl, *args]
    runpy.run_module(impl, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
