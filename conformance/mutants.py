"""Altered servers: broken ones the suite must catch, and legal variants it must pass.

``python -m conformance.mutants NAME [--base MODULE] --host H --port P [server args]``
patches the protocol package (or the socket layer), then runs a bundled server
(``impl_select`` unless ``--base`` says otherwise) exactly as ``python -m MODULE`` would.
Most patches only touch the public face of :mod:`protocol` (``protocol.server.ServerRules``' methods and
the actions they return, ``FrameDecoder``, the codecs, the name key, the fatality table), so a
mutant does not depend on how the server is written, only on it using the protocol package.
The socket mutants patch :class:`socket.socket` in the server's process; one mutant
(``restart_hello_timer``) reaches into the core's hello timers and says so.

A defect names the case-id globs of which one must catch it. A legal variant
(``legal=True``) breaks no MUST of the spec, only SHOULDs (canonical encoding, informative
texts) or optional features (the pickle codec, IPv6): every MUST case must pass against it.
The project's tests check both.
"""

from __future__ import annotations

import itertools
import os
import runpy
import socket
import struct
import sys
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

import protocol.names
import protocol.server.room
import protocol.server.rules
from protocol import FrameDecoder, MsgpackCodec, encode_frame
from protocol.constants import FATAL, MAX_WIRE_LENGTH, ErrorCode
from protocol.server import Close, Relay, Send, ServerCore, ServerRules

Rewrite = Callable[[ServerRules, int | None, list[Any]], list[Any]]


@dataclass(frozen=True)
class Mutant:
    name: str
    description: str
    #: Case-id globs of which at least one must fail against this mutant (empty when legal).
    caught_by: tuple[str, ...]
    apply: Callable[[], None]
    #: A legal variant: it must pass every MUST case.
    legal: bool = False
    #: Rewrites the server's command line before it runs (for mutants of how it starts).
    argv: Callable[[list[str]], list[str]] | None = None


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
            if isinstance(action, Relay):  # a run of relayed messages: rewritten as one Send
                action = Send(b"".join(action.frames), action.to, action.exclude)  # noqa: PLW2901
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

    for method in ("receive", "resume", "connection_lost", "hello_timeout", "slow_consumer", "fail"):
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

    # Both places that ask: the rules before the room (§7.3 step 6), and the room itself.
    setattr(protocol.server.rules, "name_problem", problem)  # noqa: B010
    setattr(protocol.server.room, "name_problem", problem)  # noqa: B010


def _nonfatal_bad_payload() -> None:
    FATAL[ErrorCode.BAD_PAYLOAD] = False


def _left_reason_always_quit() -> None:
    _rewrite_sends({"left"}, values=lambda core, client, v: {**v, "reason": "quit"})


def _no_shutdown_notice() -> None:
    _rewrite_actions(
        "shutdown", lambda core, client, actions: [a for a in actions if not isinstance(a, Send)]
    )


def _busy_newcomer_unanswered() -> None:
    """A busy server closes a newcomer at once, without the ``server_busy`` frame: a defect in
    plaintext, and over TLS what §14.2 rule 3 allows (the close may come before the handshake
    ends)."""
    original = ServerRules.fail

    def fail(self: ServerRules, client: int, code: ErrorCode, text: str) -> list[Any]:
        newcomer = not self.joined(client)  # asked first: failing a member makes it leave
        actions = original(self, client, code, text)
        if not newcomer or code is not ErrorCode.SERVER_BUSY:
            return actions  # a holder cut at the input total is still told
        kept = [action for action in actions if not isinstance(action, Send)]
        return [Close(action.client, flush=False) if isinstance(action, Close) else action for action in kept]

    setattr(ServerRules, "fail", fail)  # noqa: B010


def _roster_missing_self() -> None:
    def drop_asker(core: ServerRules, client: int | None, value: dict[str, Any]) -> dict[str, Any]:
        if client is None or client not in core.room:
            return value
        name = core.room.seat(client).name
        return {**value, "members": [m for m in value["members"] if m["name"] != name]}

    _rewrite_sends({"roster"}, values=drop_asker)


def _roster_one_short() -> None:
    def drop_last(core: ServerRules, client: int | None, value: dict[str, Any]) -> dict[str, Any]:
        return {**value, "members": value["members"][:-1]} if value["truncated"] else value

    _rewrite_sends({"roster"}, values=drop_last)


def _pong_refused_early() -> None:
    """Refuses the pong of a long token although it fits (judged in the server's own encoding)."""

    def refuse(core: ServerRules, client: int | None, value: dict[str, Any]) -> dict[str, Any]:
        # Only within 48 octets of the limit, where a pong that fits is still refused.
        if len(value["token"].encode("utf-8")) <= core.max_frame - 48:
            return value
        return {"type": "error", "code": "text_too_long", "message": "too long", "fatal": False}

    _rewrite_sends({"pong"}, values=refuse)


def _crash_on_dance() -> None:
    # Not a protocol bug but a crash: shows that the runner reports a server that dies mid-case.
    original = ServerRules.receive

    def receive(self: ServerRules, client: int, data: bytes, *args: Any) -> list[Any]:
        if b"dance" in data:
            sys.stderr.write("mutant crash_on_dance: exiting on purpose\n")
            sys.stderr.flush()
            os._exit(70)
        return original(self, client, data, *args)

    setattr(ServerRules, "receive", receive)  # noqa: B010


# --- legal variants: the codec -----------------------------------------------------------------


def _pack_str8(value: Any) -> bytes:
    """msgpack of ``value`` in shortest forms, except that strings of 1 to 31 octets are str 8.

    Legal msgpack, only not the shortest form (§4.2's encoding SHOULD). The empty string stays
    fixstr ``a0``, which the relaying encoder of the protocol package relies on.
    """
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
        if 0 < len(raw) < 32:
            return b"\xd9" + bytes([len(raw)]) + raw
        data: bytes = msgpack.packb(value, use_bin_type=True)
        return data
    if isinstance(value, dict):
        head: bytes = msgpack.packb({}, use_bin_type=True) if not value else b""
        if value:
            count = len(value)
            head = bytes([0x80 | count]) if count < 16 else b"\xde" + count.to_bytes(2, "big")
        return head + b"".join(_pack_str8(k) + _pack_str8(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        count = len(value)
        head = bytes([0x90 | count]) if count < 16 else b"\xdc" + count.to_bytes(2, "big")
        if count >= 1 << 16:
            head = b"\xdd" + count.to_bytes(4, "big")
        return head + b"".join(_pack_str8(item) for item in value)
    data = msgpack.packb(value, use_bin_type=True)
    return data


def _noncanonical_str8() -> None:
    def encode(self: MsgpackCodec, value: dict[str, Any]) -> bytes:
        return _pack_str8(value)

    def encode_str(self: MsgpackCodec, text: str) -> bytes:
        return _pack_str8(text)

    MsgpackCodec.encode = encode  # type: ignore[method-assign]
    MsgpackCodec.encode_str = encode_str  # type: ignore[method-assign]


def _informal_errors() -> None:
    """Other error texts, fields in another order, an extra field: all informative or ignorable."""
    original = MsgpackCodec.encode

    def encode(self: MsgpackCodec, value: dict[str, Any]) -> bytes:
        kind = value.get("type")
        fields = [(k, v) for k, v in value.items() if k != "type"]
        if kind == "error":
            fields = [
                (k, f"Refused ({len(v)} characters of detail withheld)" if k == "message" else v)
                for k, v in fields
            ]
        if kind == "message":
            # The text stays last: the relaying encoder appends it to an encoded head.
            fields = [("server-variant", 1), *reversed(fields[:-1]), fields[-1]]
        else:
            fields = [*reversed(fields), ("server-variant", 1)]
        return original(self, {"type": kind, **dict(fields)})

    MsgpackCodec.encode = encode  # type: ignore[method-assign]


# --- legal variants: how the server starts ------------------------------------------------------


def _refuse_pickle(argv: list[str]) -> list[str]:
    if any(pair == ("--codec", "pickle") for pair in itertools.pairwise(argv)):
        sys.stderr.write("error: this server offers no pickle codec (it is optional, §4.1)\n")
        raise SystemExit(2)
    return argv


def _ipv4_only(argv: list[str]) -> list[str]:
    """Listens on 127.0.0.1 whatever --host says, and says so on its listening line."""
    out = list(argv)
    for index, word in enumerate(out[:-1]):
        if word == "--host":
            out[index + 1] = "127.0.0.1"
    return out


def _nothing() -> None:
    pass


# --- defects at the socket layer ---------------------------------------------------------------


def _close_keeping_descriptor(sock: socket.socket, *, reset: bool) -> None:
    """Close the connection under ``sock`` at once (with RST if ``reset``), keeping its number.

    The server still holds the socket object, and its selector the descriptor number: a
    placeholder socket takes the number over (dup2), so the server's bookkeeping stays valid
    while the connection itself is gone, exactly as a ``close()`` would leave it on the wire.
    """
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with socket.socket(sock.family, socket.SOCK_STREAM) as placeholder:
        os.dup2(placeholder.fileno(), sock.fileno())


def _patch_half_close(after: Callable[[socket.socket], None], *, keep_fin: bool) -> None:
    original = socket.socket.shutdown

    def shutdown(self: socket.socket, how: int) -> None:
        if how != socket.SHUT_WR or self.type != socket.SOCK_STREAM:
            original(self, how)
            return
        if keep_fin:
            original(self, how)
        after(self)

    socket.socket.shutdown = shutdown  # type: ignore[method-assign, assignment]


def _reset_on_close() -> None:
    _patch_half_close(lambda sock: _close_keeping_descriptor(sock, reset=True), keep_fin=False)


def _close_without_drain() -> None:
    _patch_half_close(lambda sock: _close_keeping_descriptor(sock, reset=False), keep_fin=True)


# --- a defect in the hello timer: written against the core's timers ----------------------------


def _restart_hello_timer() -> None:
    """Re-arms a connection's hello timer on everything it sends before joining, refused hellos
    included, which §7.4 forbids. It reaches into ``ServerCore``'s hello timers."""
    original_receive = ServerCore.receive

    def receive(self: ServerCore, client: int, data: bytes, now: float) -> None:
        original_receive(self, client, data, now)
        if client in self._hello:  # connected, not joined, not closing
            self._hello.arm(client, now)

    setattr(ServerCore, "receive", receive)  # noqa: B010


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
            "busy_newcomer_unanswered",
            "closes a newcomer at once when busy, without server_busy (legal over TLS only)",
            ("SERVER-BUSY-INPUT-TOTAL",),
            _busy_newcomer_unanswered,
        ),
        Mutant(
            "roster_missing_self", "leaves the asker out of its roster", ("WHO-ROSTER",), _roster_missing_self
        ),
        Mutant(
            "crash_on_dance", "exits when a frame mentions 'dance'", ("MSG-UNKNOWN-TYPE",), _crash_on_dance
        ),
        Mutant(
            "roster_one_short",
            "a truncated roster lists one member fewer than fits",
            ("WHO-ROSTER-TRUNCATED",),
            _roster_one_short,
        ),
        Mutant(
            "pong_refused_early",
            "answers text_too_long to a ping of max_frame octets whose pong fits",
            ("PING-TOKEN-LONG",),
            _pong_refused_early,
        ),
        Mutant(
            "restart_hello_timer",
            "restarts the hello timer on each refused hello (impl_select only)",
            ("HELLO-TIMEOUT-AFTER-INVALID",),
            _restart_hello_timer,
        ),
        Mutant(
            "reset_on_close",
            "resets the connection (RST) where it should half-close",
            ("CLOSE-FIN-AFTER-FATAL", "CLOSE-DRAIN", "EOF-REPLIES-SENT", "SHUTDOWN-FIN"),
            _reset_on_close,
        ),
        Mutant(
            "close_without_drain",
            "closes the socket right after its half-close, without draining input",
            ("CLOSE-DRAIN",),
            _close_without_drain,
        ),
        Mutant(
            "noncanonical_str8",
            "legal: encodes strings of 1 to 31 octets as msgpack str 8",
            (),
            _noncanonical_str8,
            legal=True,
        ),
        Mutant(
            "informal_errors",
            "legal: other error texts, other field order, an extra field in every message",
            (),
            _informal_errors,
            legal=True,
        ),
        Mutant(
            "no_pickle",
            "legal: does not offer the optional pickle codec",
            (),
            _nothing,
            legal=True,
            argv=_refuse_pickle,
        ),
        Mutant(
            "ipv4_only",
            "legal: listens on 127.0.0.1 whatever --host says",
            (),
            _nothing,
            legal=True,
            argv=_ipv4_only,
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
            judged = "passes every MUST" if mutant.legal else f"caught by {', '.join(mutant.caught_by)}"
            print(f"  {mutant.name:24} {mutant.description}  ({judged})")
        return
    name, rest = args[0], args[1:]
    if name not in MUTANTS:
        raise SystemExit(f"unknown mutant {name!r}; --list shows them")
    base = "impl_select"
    if rest[:1] == ["--base"] and len(rest) > 1:
        base, rest = rest[1], rest[2:]
    mutant = MUTANTS[name]
    if mutant.argv is not None:
        rest = mutant.argv(rest)
    mutant.apply()
    sys.argv = [base, *rest]
    runpy.run_module(base, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
