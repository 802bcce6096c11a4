"""Deliberately broken servers, to show that the suite catches what it claims to.

``python -m conformance.mutants NAME [--base MODULE] --host H --port P [server args]``
patches the protocol package, then runs a bundled server (``impl_select`` unless
``--base`` says otherwise) exactly as ``python -m MODULE`` would. The patches only touch
the public face of :mod:`protocol` (``protocol.server.ServerRules``' methods and the actions
they return, ``FrameDecoder``, the name key, the fatality table), so a mutant does not
depend on how the server is written, only on it using the protocol package.

Each mutant names the case-id globs that must catch it; the project's tests check that
they do.
"""

from __future__ import annotations

import os
import runpy
import sys
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import protocol.names
import protocol.server.room
from protocol import FrameDecoder, encode_frame
from protocol.constants import FATAL, MAX_WIRE_LENGTH, ErrorCode
from protocol.server import Send, ServerRules

Rewrite = Callable[[ServerRules, int | None, list[Any]], list[Any]]


@dataclass(frozen=True)
class Mutant:
    name: str
    description: str
    #: Case-id globs of which at least one must fail against this mutant.
    caught_by: tuple[str, ...]
    apply: Callable[[], None]


def _frames(data: bytes) -> list[bytes]:
    """The payloads of the whole frames in ``data`` (a Send may carry several)."""
    decoder = FrameDecoder(MAX_WIRE_LENGTH)
    decoder.feed(data)
    payloads = []
    while (payload := decoder.next_frame()) is not None:
        payloads.append(payload)
    return payloads


def _rewrite_actions(method: str, rewrite: Rewrite) -> None:
    """Pass the actions every call of ``ServerRules.<method>`` returns through ``rewrite``."""
    original = getattr(ServerRules, method)

    def patched(self: ServerRules, *args: Any) -> list[Any]:
        client = args[0] if args and isinstance(args[0], int) else None
        return rewrite(self, client, original(self, *args))

    setattr(ServerRules, method, patched)


def _rewrite_sends(
    kinds: set[str],
    *,
    values: Callable[[ServerRules, int | None, dict[str, Any]], dict[str, Any]] | None = None,
    recipients: Callable[[int | None, Send], Send] | None = None,
) -> None:
    """Change the messages of ``kinds`` the server sends (``values``), or whom it sends them to
    (``recipients``), whatever event produced them."""

    def rewrite(core: ServerRules, client: int | None, actions: list[Any]) -> list[Any]:
        out = []
        for action in actions:
            if not isinstance(action, Send):
                out.append(action)
                continue
            decoded = [core.codec.decode(payload) for payload in _frames(action.data)]
            if not any(value.get("type") in kinds for value in decoded):
                out.append(action)
                continue
            if values is not None:
                changed = [values(core, client, v) if v.get("type") in kinds else v for v in decoded]
                data = b"".join(encode_frame(core.codec.encode(v)) for v in changed)
                action = Send(data, action.to, action.exclude)  # noqa: PLW2901
            out.append(recipients(client, action) if recipients is not None else action)
        return out

    for method in ("receive", "connection_lost", "hello_timeout", "slow_consumer"):
        _rewrite_actions(method, rewrite)


# --- the mutants ---------------------------------------------------------------------------


def _echo_to_sender() -> None:
    _rewrite_sends({"message"}, recipients=lambda client, send: Send(send.data, send.to, None))


def _wrong_join_count() -> None:
    _rewrite_sends({"joined"}, values=lambda core, client, v: {**v, "clients": v["clients"] - 1})


def _wrong_left_count() -> None:
    _rewrite_sends({"left"}, values=lambda core, client, v: {**v, "clients": v["clients"] + 1})


def _accepts_oversize() -> None:
    original = FrameDecoder.__init__

    def no_limit(self: FrameDecoder, max_frame: int = MAX_WIRE_LENGTH) -> None:
        original(self, MAX_WIRE_LENGTH)

    FrameDecoder.__init__ = no_limit  # type: ignore[method-assign]


def _no_hello_timeout() -> None:
    ServerRules.hello_timeout = lambda self, client: []  # type: ignore[method-assign]


def _no_pong_token_echo() -> None:
    def alter(core: ServerRules, client: int | None, value: dict[str, Any]) -> dict[str, Any]:
        return {**value, "token": unicodedata.normalize("NFC", value["token"])[:64]}

    _rewrite_sends({"pong"}, values=alter)


def _no_fanout() -> None:
    def first_other_only(client: int | None, send: Send) -> Send:
        return Send(send.data, [c for c in send.to if c != send.exclude][:1], send.exclude)

    _rewrite_sends({"message"}, recipients=first_other_only)


def _ignores_name_collision() -> None:
    setattr(protocol.server.room, "name_key", lambda name: unicodedata.normalize("NFKC", name))  # noqa: B010
    setattr(protocol.server.room, "name_skeleton", lambda name: unicodedata.normalize("NFKC", name))  # noqa: B010


def _ignores_look_alikes() -> None:
    setattr(protocol.server.room, "name_skeleton", protocol.names.name_key)  # noqa: B010


def _first_name_rules() -> None:
    # The rules of the first text of §6.1: categories only, no PRECIS profile.
    def problem(name: str) -> str | None:
        categories = {"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"}
        if not 1 <= len(name) <= 32 or "@" in name:
            return "refused"
        if any(char.isspace() or unicodedata.category(char) in categories for char in name):
            return "refused"
        return None

    setattr(protocol.server.room, "name_problem", problem)  # noqa: B010


def _nonfatal_bad_payload() -> None:
    FATAL[ErrorCode.BAD_PAYLOAD] = False


def _left_reason_always_quit() -> None:
    _rewrite_sends({"left"}, values=lambda core, client, v: {**v, "reason": "quit"})


def _no_shutdown_notice() -> None:
    _rewrite_actions(
        "shutdown", lambda core, client, actions: [a for a in actions if not isinstance(a, Send)]
    )


def _roster_missing_self() -> None:
    def drop_asker(core: ServerRules, client: int | None, value: dict[str, Any]) -> dict[str, Any]:
        if client is None or client not in core.room:
            return value
        name = core.room.seat(client).name
        return {**value, "members": [m for m in value["members"] if m["name"] != name]}

    _rewrite_sends({"roster"}, values=drop_asker)


def _crash_on_dance() -> None:
    # Not a protocol bug but a crash: shows that the runner reports a server that dies mid-case.
    original = ServerRules.receive

    def receive(self: ServerRules, client: int, data: bytes) -> list[Any]:
        if b"dance" in data:
            sys.stderr.write("mutant crash_on_dance: exiting on purpose\n")
            sys.stderr.flush()
            os._exit(70)
        return original(self, client, data)

    ServerRules.receive = receive  # type: ignore[method-assign]


MUTANTS: dict[str, Mutant] = {
    m.name: m
    for m in (
        Mutant("echo_to_sender", "relays every say to its sender too", ("FANOUT-*",), _echo_to_sender),
        Mutant(
            "wrong_join_count",
            "joined.clients is one less than the members",
            ("JOINED-*",),
            _wrong_join_count,
        ),
        Mutant(
            "wrong_left_count",
            "left.clients counts the departed member",
            ("LEFT-QUIT", "LEFT-COUNTS"),
            _wrong_left_count,
        ),
        Mutant(
            "accepts_oversize",
            "reads frames of any length",
            ("FRAME-LEN-OVER*", "FRAME-LEN-HUGE"),
            _accepts_oversize,
        ),
        Mutant(
            "no_hello_timeout",
            "never times out a connection that does not join",
            ("HELLO-TIMEOUT",),
            _no_hello_timeout,
        ),
        Mutant(
            "no_pong_token_echo", "NFC-normalises and truncates pong tokens", ("PING-*",), _no_pong_token_echo
        ),
        Mutant("no_fanout", "relays each say to one other member only", ("FANOUT-ALL-OTHERS",), _no_fanout),
        Mutant(
            "ignores_name_collision",
            "compares names without case folding",
            ("NAME-TAKEN-*",),
            _ignores_name_collision,
        ),
        Mutant(
            "ignores_look_alikes",
            "compares names without their confusable skeletons",
            ("NAME-TAKEN-CONFUSABLE",),
            _ignores_look_alikes,
        ),
        Mutant(
            "first_name_rules",
            "checks names by category only, without the PRECIS profile",
            ("NAME-INVISIBLE", "NAME-SYMBOL-COMPAT", "NAME-AT"),
            _first_name_rules,
        ),
        Mutant(
            "nonfatal_bad_payload",
            "keeps the connection after bad_payload",
            ("LEFT-ERROR", "FRAME-LEN-ZERO", "ERR-FATAL-*"),
            _nonfatal_bad_payload,
        ),
        Mutant(
            "left_reason_always_quit",
            "gives every departure the reason quit",
            ("LEFT-RESET", "LEFT-ERROR"),
            _left_reason_always_quit,
        ),
        Mutant(
            "no_shutdown_notice",
            "closes without shutdown notices",
            ("SHUTDOWN-SIGTERM",),
            _no_shutdown_notice,
        ),
        Mutant(
            "roster_missing_self", "leaves the asker out of its roster", ("WHO-ROSTER",), _roster_missing_self
        ),
        Mutant(
            "crash_on_dance", "exits when a frame mentions 'dance'", ("MSG-UNKNOWN-TYPE",), _crash_on_dance
        ),
    )
}


def command(name: str, base: str = "impl_select") -> str:
    """The ``--server-cmd`` template that runs mutant ``name``."""
    extra = f" --base {base}" if base != "impl_select" else ""
    return f"{sys.executable} -m conformance.mutants {name}{extra} --host {{host}} --port {{port}}"


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "--list"):
        print(__doc__)
        for mutant in MUTANTS.values():
            print(f"  {mutant.name:24} {mutant.description}  (caught by {', '.join(mutant.caught_by)})")
        return
    name, rest = args[0], args[1:]
    if name not in MUTANTS:
        raise SystemExit(f"unknown mutant {name!r}; --list shows them")
    base = "impl_select"
    if rest[:1] == ["--base"] and len(rest) > 1:
        base, rest = rest[1], rest[2:]
    MUTANTS[name].apply()
    sys.argv = [base, *rest]
    runpy.run_module(base, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
