"""The test vectors of spec/vectors (§15) replayed against the server, and hosts over IPv6 (§8.3)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from protocol import Hello, Pong, Roster, Welcome
from protocol.constants import DEFAULT_MAX_FRAME

from ..context import Context, relayed
from ..registry import MUST, case
from ..serverproc import ServerFailed, ServerProcess
from ..spec_vectors import load_vectors
from ..wire import WirePeer


def _vectors(name: str, codec: str) -> list[dict[str, Any]]:
    # Shipped with the package: a missing file is a broken install, never a skip.
    return [v for v in load_vectors(name) if v["codec"] == codec]


@case(
    "VEC-INVALID", "15.3", MUST, "every invalid.json vector of the codec gets its error code and fatal flag"
)
def test_vec_invalid(ctx: Context) -> None:
    if ctx.max_frame != DEFAULT_MAX_FRAME:
        pytest.skip(
            f"the vectors assume max_frame {DEFAULT_MAX_FRAME}; the server advertises {ctx.max_frame}"
        )
    vectors = _vectors("invalid.json", ctx.codec_name)
    assert vectors, "no invalid.json vector for this codec"
    for vector in vectors:
        ctx.transcript.note(f"vector {vector['id']}")
        peer = ctx.peer(vector["id"][:40])
        if vector["state"] == "active":
            peer.join("alice")
        peer.send_raw(bytes.fromhex(vector["hex"]), vector["id"])
        error = peer.expect_error(vector["error"], fatal=vector["fatal"])
        assert error is not None, vector["id"]
        if vector["fatal"]:
            peer.wait_closed()
        else:
            ctx.close_gracefully(peer)


@case(
    "VEC-NAMES",
    "15.4",
    MUST,
    "every names.json vector: with its member present, the name is welcomed or refused as it says",
)
def test_vec_names(ctx: Context) -> None:
    vectors = load_vectors("names.json")
    assert vectors, "no names.json vector"
    for vector in vectors:
        ctx.transcript.note(f"vector {vector['id']}")
        holder = None
        if vector["member"] is not None:
            holder = ctx.peer("member")
            holder.join(vector["member"])
        peer = ctx.peer(vector["id"][:40])
        peer.send(Hello(vector["name"]))
        if vector["error"] is None:
            welcome = peer.expect(Welcome, what=f"welcome for vector {vector['id']}")
            assert welcome.name == vector["name"], f"{vector['id']}: welcome.name {welcome.name!r}"
        else:
            peer.expect_error(vector["error"], fatal=False)
        # Both leave before the next vector, which may use the same names.
        ctx.close_gracefully(peer)
        if holder is not None:
            ctx.close_gracefully(holder)


@case(
    "VEC-MESSAGES-C2S",
    "15.2",
    MUST,
    "every client-to-server messages.json vector of the codec is accepted and acted on",
)
def test_vec_messages_c2s(ctx: Context) -> None:
    vectors = [v for v in _vectors("messages.json", ctx.codec_name) if v["direction"] == "c2s"]
    assert vectors, "no client-to-server vector for this codec"
    sender, observer = ctx.members("sender", "observer")
    for vector in vectors:
        message = vector["message"]
        data = bytes.fromhex(vector["hex"])
        ctx.transcript.note(f"vector {vector['id']}")
        kind = message["type"]
        if kind == "hello":
            peer = ctx.peer(vector["id"][:40])
            if ctx.security.token is not None:
                # A server with access control refuses the vector's hello as it is (§17.3): it
                # is sent with the run's token instead, decoded and re-encoded.
                value = {**ctx.codec.decode(data[4:]), "token": ctx.security.token}
                peer.send_raw(WirePeer.frame_of(ctx.codec, value), f"{vector['id']} with the run's token")
            else:
                peer.send_raw(data, vector["id"])
            welcome = peer.expect(Welcome, what=f"welcome for vector {vector['id']}")
            assert welcome.name == message["name"], f"{vector['id']}: welcome.name {welcome.name!r}"
            ctx.close_gracefully(peer)
        elif kind == "say":
            sender.send_raw(data, vector["id"])
            observer.expect(relayed(message["text"], sender.name))
        elif kind == "ping":
            sender.send_raw(data, vector["id"])
            pong = sender.expect(Pong)
            assert pong.token == message["token"], f"{vector['id']}: pong token {pong.token!r}"
        elif kind == "who":
            sender.send_raw(data, vector["id"])
            roster = sender.expect(Roster)
            assert sender.name in [m.name for m in roster.members]
        else:
            raise AssertionError(f"vector {vector['id']} has an unexpected type {kind!r}")


def _ipv6_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def _spawn_on(ctx: Context, host: str, why: str) -> ServerProcess:
    """A server of the run's template listening on ``host``; the case skips if there is none.

    Listening on IPv6 is optional (§1.2): a server that cannot be started on ``host``, or
    says it listens elsewhere, makes the case a skip with that reason, never a pass.
    """
    if ctx.template is not None and "{host}" not in ctx.template:
        pytest.skip(f"the server command template has no {{host}} placeholder, so it cannot {why}")
    try:
        return ctx.spawn(host=host)
    except ServerFailed as exc:
        first = str(exc).splitlines()[0] if str(exc) else "it did not start"
        pytest.skip(f"the server, started with host {host}, does not listen there ({first}): it cannot {why}")


@case(
    "HOST-IPV6",
    "8.3",
    MUST,
    "over IPv6, host is the RFC 5952 address without brackets or port ('::1')",
    spawns=True,
)
def test_host_ipv6(ctx: Context) -> None:
    if not _ipv6_available():
        pytest.skip("this machine has no IPv6 loopback")
    server = _spawn_on(ctx, "::1", "serve IPv6")
    watcher = ctx.peer("watcher", address=server.address)
    watcher.join(ctx.name("watcher"))
    peer = ctx.peer("v6", address=server.address)
    welcome = peer.join(ctx.name("v6"))
    assert welcome.host == "::1", f"welcome.host over IPv6 loopback: expected '::1', got {welcome.host!r}"
    notice = watcher.expect(lambda m: getattr(m, "name", None) == welcome.name, what="joined")
    assert notice.host == "::1", f"joined.host: expected '::1', got {notice.host!r}"


@case(
    "HOST-IPV4-MAPPED",
    "8.3",
    MUST,
    "an IPv4 client of an IPv6 (dual-stack) listener is host '127.0.0.1', not '::ffff:127.0.0.1'",
    spawns=True,
)
def test_host_ipv4_mapped(ctx: Context) -> None:
    if not _ipv6_available():
        pytest.skip("this machine has no IPv6 loopback")
    # The IPv4-mapped loopback address: an IPv6 socket bound there takes IPv4 connections to
    # 127.0.0.1 (unless IPv6-only), and no other address is touched.
    server = _spawn_on(ctx, "::ffff:127.0.0.1", "serve IPv4 clients on an IPv6 socket")
    peer = ctx.peer("v4", address=("127.0.0.1", server.port))
    welcome = peer.join(ctx.name("v4"))
    assert welcome.host == "127.0.0.1", (
        f"welcome.host for an IPv4 client of a dual-stack listener: expected '127.0.0.1' (§8.3), "
        f"got {welcome.host!r}"
    )
