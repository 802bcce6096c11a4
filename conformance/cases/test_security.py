"""Transport security and access control (§17), when the run is told the server has them
(``--tls``, ``--auth-token``, ``--auth-reserved``; §16.1 rule 5); not applicable otherwise."""

from __future__ import annotations

import dataclasses
import time

from protocol import Hello, Ping, Pong, Roster, Say, Welcome, Who
from protocol.constants import AUTH_BURST, ErrorCode

from ..context import Context, relayed
from ..registry import MUST, Settings, case
from ..wire import WirePeer, client_hello

HELLO_TIMEOUT = 1.0
SHORT = Settings(hello_timeout=HELLO_TIMEOUT)


def _plaintext(ctx: Context, label: str) -> WirePeer:
    """A peer that speaks the protocol in clear on the TLS port."""
    return ctx.peer(label, security=dataclasses.replace(ctx.security, tls=None))


def _closed_within(ctx: Context, peer: WirePeer, seconds: float, why: str) -> float:
    """``peer``'s connection ends (FIN or RST) within ``seconds``; returns when, since now."""
    since = time.monotonic()
    peer.wait_closed(seconds)
    elapsed = time.monotonic() - since
    assert not peer.payloads, f"{why}: the server sent frames in clear: {peer.values[:3]!r}"
    return elapsed


def _still_serving(ctx: Context) -> None:
    member = ctx.member("after")
    member.barrier()


@case(
    "TLS-ROUND-TRIP",
    "17.1",
    MUST,
    "over TLS 1.2 or later: join, say, who, ping and leave as over TCP",
    needs=("tls",),
)
def test_tls_round_trip(ctx: Context) -> None:
    alice, bob = ctx.members("alice", "bob")
    assert alice.tls is not None and alice.tls.version in ("TLSv1.2", "TLSv1.3"), (
        f"negotiated {alice.tls.version if alice.tls else None}, not TLS 1.2 or later"
    )
    alice.send(Say("over TLS"))
    bob.expect(relayed("over TLS", alice.name))
    bob.send(Who())
    roster = bob.expect(Roster)
    assert {m.name for m in roster.members} >= {alice.name, bob.name}
    bob.send(Ping("tls"))
    bob.expect(lambda m: isinstance(m, Pong) and m.token == "tls", what="pong{token: 'tls'}")  # noqa: S105
    ctx.close_gracefully(alice)
    assert alice.closed_by == "FIN", (
        f"the server ended a TLS connection by {alice.closed_by}, not close_notify and FIN"
    )


@case(
    "TLS-PLAINTEXT-REFUSED",
    "17.1",
    MUST,
    "a plaintext hello on a TLS port gets no frame and is closed; others are still served",
    also=("17.2",),
    needs=("tls",),
)
def test_tls_plaintext_refused(ctx: Context) -> None:
    peer = _plaintext(ctx, "plaintext")
    peer.send(Hello(ctx.name("plain")))
    _closed_within(ctx, peer, ctx.timeout(5), "a plaintext hello on a TLS port")
    _still_serving(ctx)


@case(
    "TLS-GARBAGE-CLIENTHELLO",
    "17.1",
    MUST,
    "a TLS record header followed by garbage, instead of a ClientHello, is closed; others are still served",
    needs=("tls",),
)
def test_tls_garbage_client_hello(ctx: Context) -> None:
    for label, data in (
        ("garbage", b"\x16\x03\x01\x00\x40" + bytes(range(64))),
        ("junk", b"\xff" * 300),
    ):
        peer = _plaintext(ctx, label)
        peer.send_raw(data, f"{len(data)} octets that are not a ClientHello")
        _closed_within(ctx, peer, ctx.timeout(5), f"{label} instead of a ClientHello")
    _still_serving(ctx)


@case(
    "TLS-HELLO-TIMEOUT-HANDSHAKE",
    "17.2",
    MUST,
    "the hello timer bounds the handshake: silent, and stalled mid-ClientHello, both closed at the timeout",
    also=("7.4",),
    settings=SHORT,
    needs=("tls",),
)
def test_tls_hello_timeout_handshake(ctx: Context) -> None:
    since = time.monotonic()
    silent = _plaintext(ctx, "silent")
    stalled = _plaintext(ctx, "stalled")
    stalled.send_raw(client_hello()[:20], "the first 20 octets of a ClientHello")
    for peer in (silent, stalled):
        peer.wait_closed(HELLO_TIMEOUT + ctx.timeout(5))
        elapsed = time.monotonic() - since
        assert elapsed >= HELLO_TIMEOUT - 0.05, (
            f"{peer.label}: closed after {elapsed:.2f} s, before the {HELLO_TIMEOUT} s hello timeout"
        )
    _still_serving(ctx)


def _refused(ctx: Context, peer: WirePeer, name: str, code: ErrorCode = ErrorCode.AUTH_FAILED) -> None:
    peer.send(Hello(name))
    peer.expect_error(code, fatal=True)
    peer.wait_closed()


@case(
    "AUTH-MISSING",
    "17.3",
    MUST,
    "a hello without a token is auth_failed (fatal), also for a member's name (no name_taken first)",
    also=("9.1", "7.3"),
    needs=("auth",),
)
def test_auth_missing(ctx: Context) -> None:
    member = ctx.member("member")
    bare = dataclasses.replace(ctx.security, token=None)
    _refused(ctx, ctx.peer("no-token", security=bare), ctx.name("anon"))
    _refused(ctx, ctx.peer("no-token-taken", security=bare), member.name)
    member.barrier()


@case(
    "AUTH-WRONG",
    "17.3",
    MUST,
    "a hello with a wrong token is auth_failed (fatal)",
    also=("9.1",),
    needs=("auth",),
)
def test_auth_wrong(ctx: Context) -> None:
    token = ctx.security.token
    assert token is not None
    wrong = dataclasses.replace(ctx.security, token=token[:-1] + ("x" if token[-1] != "x" else "y"))
    _refused(ctx, ctx.peer("wrong-token", security=wrong), ctx.name("guess"))


@case(
    "AUTH-RIGHT",
    "17.3",
    MUST,
    "a hello with the right token is welcomed, and the member served",
    needs=("auth",),
)
def test_auth_right(ctx: Context) -> None:
    peer = ctx.peer("token")
    peer.send(Hello(ctx.name("holder"), ctx.security.token))
    peer.expect(Welcome)
    peer.barrier()


@case(
    "AUTH-NAME-FIRST",
    "7.3",
    MUST,
    "without a token, an invalid name is still name_invalid (non-fatal): §6.1 is judged before the token",
    also=("17.3",),
    needs=("auth",),
)
def test_auth_name_first(ctx: Context) -> None:
    peer = ctx.peer("invalid", security=dataclasses.replace(ctx.security, token=None))
    peer.send(Hello("has space"))
    peer.expect_error(ErrorCode.NAME_INVALID, fatal=False)


@case(
    "AUTH-RATE-LIMIT",
    "17.4",
    MUST,
    f"after {AUTH_BURST} failed hellos a source is refused even with the right token; another source is not",
    also=("13",),
    isolated=True,
    needs=("auth",),
)
def test_auth_rate_limit(ctx: Context) -> None:
    token = ctx.security.token
    assert token is not None
    wrong = dataclasses.replace(ctx.security, token=token + "-wrong")
    for attempt in range(AUTH_BURST):
        _refused(ctx, ctx.peer(f"wrong-{attempt + 1}", security=wrong), ctx.name("guess"))
    limited = ctx.peer("right-but-limited")
    limited.send(Hello(ctx.name("late")))
    limited.expect_error(ErrorCode.AUTH_FAILED, fatal=True)
    limited.wait_closed()
    host = ctx.address[0]
    if host.startswith("127."):
        # 127.0.0.2 is loopback too, and another source (§17.4).
        other = ctx.peer("other-source", source="127.0.0.2")
        other.join(ctx.name("other"))
        other.barrier()


@case(
    "AUTH-RESERVED-NAME",
    "17.3",
    MUST,
    "a name reserved to another token, in any case form, is name_taken (non-fatal); another name joins",
    also=("6.2",),
    needs=("auth", "reserved"),
)
def test_auth_reserved_name(ctx: Context) -> None:
    reserved = ctx.security.reserved_name
    assert reserved is not None
    peer = ctx.peer("squatter")
    for form in dict.fromkeys((reserved, reserved.upper(), reserved.lower())):
        peer.send(Hello(form))
        peer.expect_error(ErrorCode.NAME_TAKEN, fatal=False)
    peer.join(ctx.name("honest"))
    peer.barrier()
