"""TLS (spec §17.1, §17.2) and access control through both servers: the memory-BIO session,
startup errors, and the fault tests (handshakes never finished, garbage and plaintext on a TLS
port, wrong-token floods), each checking that the server holds nothing afterwards."""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
from crowd import Crowd, Peer, fds, raise_descriptor_limit, rss, running, settle
from tlscerts import Certs, make_certs

from conformance.serverproc import BUNDLED
from conformance.wire import Security, WirePeer, client_hello
from impl_select.tls import TlsFailure, TlsSession, client_context, server_context
from protocol import Hello, Ping, Pong, Say, Welcome
from protocol.constants import AUTH_BURST, ErrorCode
from protocol.logtext import escape

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "flood-test-token-0123456789"
WRONG = "flood-wrong-token-0123456789"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(params=sorted(BUNDLED))
def impl(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _tls_flags(certs: Certs) -> tuple[str, ...]:
    return ("--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key))


def _security(certs: Certs, token: str | None = None) -> Security:
    return Security(tls=client_context(certs.ca), server_name="localhost", token=token)


# --- the session, in memory --------------------------------------------------------------------


def _pair(certs: Certs) -> tuple[TlsSession, TlsSession]:
    server = TlsSession(server_context(certs.server_cert, certs.server_key), server_side=True)
    client = TlsSession(client_context(certs.ca), server_side=False, server_hostname="localhost")
    client.start()
    for _ in range(10):  # a handshake takes two round trips at most
        if client.handshaken and server.handshaken and not client.pending_output:
            break
        server.receive(client.take_output())
        client.receive(server.take_output())
    assert client.handshaken and server.handshaken
    return server, client


def test_a_session_shakes_hands_and_carries_frames_both_ways(certs: Certs) -> None:
    server, client = _pair(certs)
    assert server.version in ("TLSv1.2", "TLSv1.3")
    assert client.encrypt([b"hello ", memoryview(b"world")]) == 11
    plain, ended = server.receive(client.take_output())
    assert (plain, ended) == (b"hello world", False)
    server.encrypt([b"x" * 100_000])
    plain, ended = client.receive(server.take_output())
    assert plain == b"x" * 100_000 and not ended


def test_close_notify_ends_the_stream_and_reading_goes_on_after_our_own(certs: Certs) -> None:
    server, client = _pair(certs)
    server.close()  # ours first: the half-close of §17.2
    server_notify = server.take_output()
    client.encrypt([b"late"])
    plain, ended = server.receive(client.take_output())
    assert (plain, ended) == (b"late", False), "input is still read after our close_notify"
    assert server.encrypt([b"dropped"]) == 7 and not server.take_output(), "nothing is sent after close"
    assert client.receive(server_notify) == (b"", True)
    client.close()
    assert server.receive(client.take_output()) == (b"", True)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x10" + b"\x82\xa4type\xa5hello" + b"\xa4name",  # a plaintext chat frame
        b"\x16\x03\x01\x00\x40" + bytes(64),  # a handshake record of garbage
        b"GET / HTTP/1.1\r\n\r\n",
    ],
)
def test_what_is_not_a_client_hello_is_one_tls_failure(certs: Certs, data: bytes) -> None:
    server = TlsSession(server_context(certs.server_cert, certs.server_key), server_side=True)
    with pytest.raises(TlsFailure) as raised:
        server.receive(data)
    assert "\n" not in str(raised.value)


def test_the_end_of_stream_mid_handshake_is_a_tls_failure_and_output_before_it_is_dropped(
    certs: Certs,
) -> None:
    server = TlsSession(server_context(certs.server_cert, certs.server_key), server_side=True)
    assert server.encrypt([b"hello_timeout error"]) == 19
    assert not server.take_output(), "nothing can be sent before the handshake"
    with pytest.raises(TlsFailure, match="ended during the TLS handshake"):
        server.receive(b"")


def test_a_client_refuses_a_certificate_of_another_ca(certs: Certs) -> None:
    server = TlsSession(server_context(certs.server_cert, certs.server_key), server_side=True)
    client = TlsSession(client_context(certs.other_ca), server_side=False, server_hostname="localhost")
    client.start()
    server.receive(client.take_output())
    with pytest.raises(TlsFailure, match="certificate verify failed"):
        client.receive(server.take_output())


# --- startup -----------------------------------------------------------------------------------


def _start_fails(impl: str, *args: str, usage: bool = False) -> str:
    """The one line a server that cannot start prints (after its usage, for a bad command line)."""
    command = [sys.executable, "-m", impl, "--port", "0", *args]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr, completed.stderr
    assert "listening on" not in completed.stdout
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 or (usage and lines[0].startswith("usage:")), completed.stderr
    return lines[-1]


def test_unusable_certificates_keys_and_auth_files_stop_the_server_with_one_line(
    impl: str, certs: Certs, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pem"
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("nothing here\n")
    cert, key = str(certs.server_cert), str(certs.server_key)
    assert "--tls-cert" in _start_fails(impl, "--tls-cert", str(missing), "--tls-key", key)
    assert "no such file" in _start_fails(impl, "--tls-cert", cert, "--tls-key", str(missing))
    assert "key values mismatch" in _start_fails(impl, "--tls-cert", str(certs.ca), "--tls-key", key)
    assert "not a PEM" in _start_fails(impl, "--tls-cert", str(not_pem), "--tls-key", str(not_pem))
    assert "--tls-client-ca" in _start_fails(
        impl, "--tls-cert", cert, "--tls-key", key, "--tls-client-ca", str(not_pem)
    )
    assert "--auth-file" in _start_fails(impl, "--auth-file", str(missing))
    auth = tmp_path / "auth"
    auth.write_text("tooshort\n")
    assert "16 to 256" in _start_fails(impl, "--auth-file", str(auth))
    assert "go together" in _start_fails(impl, "--tls-cert", cert, usage=True)


def test_pickle_without_tls_or_auth_gets_the_stronger_warning(
    impl: str, certs: Certs, tmp_path: Path
) -> None:
    auth = tmp_path / "auth"
    auth.write_text(f"{TOKEN}\n")
    logs = {}
    for label, args in (
        ("bare", ()),
        ("tls", _tls_flags(certs)),
        ("auth", ("--auth-file", str(auth))),
    ):
        with running(impl, "--codec", "pickle", *args) as server:
            pass
        logs[label] = server.stderr_tail(100_000)
    assert all("pickle codec enabled" in log for log in logs.values())
    assert "neither TLS nor an auth file" in logs["bare"]
    assert "neither TLS nor an auth file" not in logs["tls"] + logs["auth"]


# --- through the servers -----------------------------------------------------------------------


def test_a_tls_server_relays_between_verified_clients(impl: str, certs: Certs) -> None:
    with running(impl, *_tls_flags(certs)) as server:
        security = _security(certs)
        with (
            WirePeer(server.address, security=security, label="a") as a,
            WirePeer(server.address, security=security, label="b") as b,
        ):
            a.join("alice")
            b.join("bob")
            a.barrier()
            a.send(Say("x" * 200_000))  # several TLS records
            b.expect(lambda m: getattr(m, "text", None) == "x" * 200_000, what="the long message")
            a.half_close()
            a.wait_closed()
            assert a.closed_by == "FIN"


def test_client_certificates_are_required_with_tls_client_ca(impl: str, certs: Certs) -> None:
    with running(impl, *_tls_flags(certs), "--tls-client-ca", str(certs.ca)) as server:
        without = _security(certs)
        with (
            pytest.raises((AssertionError, OSError)),
            WirePeer(server.address, security=without, label="no-cert") as peer,
        ):
            peer.join("anon")  # TLS 1.3 reports the missing certificate after the handshake
        context = client_context(certs.ca)
        context.load_cert_chain(certs.client_cert, certs.client_key)
        with WirePeer(
            server.address, security=Security(tls=context, server_name="localhost"), label="cert"
        ) as peer:
            assert isinstance(peer.join("holder"), Welcome)


def _ended(peers: list[Peer]) -> bool:
    return all(peer.ended for peer in peers)


def _connected(peers: list[Peer]) -> bool:
    return all(peer.connected for peer in peers)


def test_handshakes_never_finished_are_closed_at_the_hello_timeout_and_leave_nothing(
    impl: str, certs: Certs
) -> None:
    count = 300
    raise_descriptor_limit(count + 200)
    with (
        running(impl, *_tls_flags(certs), "--hello-timeout", "2", "--log-level", "WARNING") as server,
        WirePeer(server.address, security=_security(certs), label="member") as member,
        Crowd(server.address) as crowd,
    ):
        member.join("member")
        member.barrier()
        baseline_fds, before = fds(server), rss(server)
        hello = client_hello()
        peers = crowd.open(f"stall{i:03d}" for i in range(count))
        crowd.pump(partial(_connected, peers), 30, "every connection")
        for peer in peers[::2]:
            crowd.send_raw(peer, hello[:40])  # half of them stall inside the ClientHello
        settle(lambda: fds(server), baseline_fds + count, 30, "every connection accepted")
        member.barrier()
        grown = rss(server) - before
        crowd.pump(partial(_ended, peers), 30, "the hello timeout of every stalled handshake")
        assert {peer.ended for peer in peers} == {"FIN"}
        assert all(not peer.errors() for peer in peers), "no frame goes out before the handshake"
        settle(lambda: fds(server), baseline_fds, 10, "descriptors after the timeouts")
        member.barrier()
        assert grown < count * 64, f"RSS grew by {grown} KiB for {count} stalled handshakes"
        print(f"\n{impl}: {count} stalled handshakes: RSS +{grown} KiB, all closed at the hello timeout")


def test_garbage_and_plaintext_on_a_tls_port_are_closed_at_once_and_logged_once(
    impl: str, certs: Certs
) -> None:
    each, rounds = 100, 5
    raise_descriptor_limit(3 * each + 200)
    sizes: list[int] = []
    with (
        running(impl, *_tls_flags(certs), "--hello-timeout", "60") as server,
        WirePeer(server.address, security=_security(certs), label="member") as member,
    ):
        member.join("member")
        member.barrier()
        baseline_fds = fds(server)
        sizes.append(rss(server))
        for round_number in range(rounds):
            with Crowd(server.address) as crowd:
                plaintext = crowd.open(f"plain{round_number}-{i:03d}" for i in range(each))
                garbage = crowd.open(f"junk{round_number}-{i:03d}" for i in range(each))
                records = crowd.open(f"record{round_number}-{i:03d}" for i in range(each))
                everyone = plaintext + garbage + records
                crowd.pump(partial(_connected, everyone), 30, "every connection")
                for peer in plaintext:
                    crowd.send(peer, Hello(peer.name))
                for peer in garbage:
                    crowd.send_raw(peer, b"\xff" * 512)
                for peer in records:
                    crowd.send_raw(peer, b"\x16\x03\x01\x00\x40" + bytes(range(64)))
                # Well within the 60 s hello timeout: closed for what they sent, not by the timer.
                crowd.pump(partial(_ended, everyone), 20, "every non-TLS connection closed")
                assert all(not peer.errors() for peer in everyone), "nothing is answered in clear"
            settle(lambda: fds(server), baseline_fds, 10, "descriptors after the refusals")
            member.send(Ping(f"round {round_number}"))
            member.expect(lambda m: isinstance(m, Pong), what="pong")
            sizes.append(rss(server))
    log = server.stderr_tail(1_000_000)
    refusals = [line for line in log.splitlines() if "TLS error" in line]
    assert len(refusals) == rounds * 3 * each, (
        f"{len(refusals)} refusals logged for {rounds * 3 * each} connections"
    )
    first, last = sizes[1] - sizes[0], sizes[-1] - sizes[-3]
    # The first rounds size the allocators' pools (OpenSSL's too); later rounds reuse them.
    # (asyncio's own ssl= transport grew by about 140 MB per round of 450 such clients.)
    assert first < 3 * each * 64, f"RSS grew by {first} KiB in the first round"
    assert last < 6 * 1024, f"RSS grew by {last} KiB over the last two rounds: {sizes}"
    print(f"\n{impl}: {rounds} rounds of {3 * each} non-TLS clients, one log line each; RSS (KiB) {sizes}")


def test_wrong_token_floods_are_limited_and_cost_others_nothing(impl: str, tmp_path: Path) -> None:
    flood = 400
    raise_descriptor_limit(flood + 200)
    auth = tmp_path / "auth"
    auth.write_text(f"{TOKEN}\n")
    with running(impl, "--auth-file", str(auth)) as server, Crowd(server.address) as crowd:
        member = WirePeer(server.address, security=Security(token=TOKEN), label="member")
        member.join("member")
        member.barrier()
        baseline_fds, before = fds(server), rss(server)
        peers = crowd.open(f"guess{i:03d}" for i in range(flood))
        crowd.pump(partial(_connected, peers), 30, "every connection")
        for peer in peers:
            crowd.send(peer, Hello(peer.name, WRONG))
        crowd.pump(partial(_ended, peers), 30, "every refusal")
        for peer in peers:
            assert [(e.code, e.fatal) for e in peer.errors()] == [(ErrorCode.AUTH_FAILED.value, True)]
        settle(lambda: fds(server), baseline_fds, 10, "descriptors after the flood")
        grown = rss(server) - before
        # The flood's source is limited: the right token from there is refused too ...
        with WirePeer(server.address, security=Security(token=TOKEN), label="limited") as limited:
            limited.send(Hello("late"))
            limited.expect_error(ErrorCode.AUTH_FAILED, fatal=True)
        # ... while another source, and the member already in, are served.
        with WirePeer(
            server.address, security=Security(token=TOKEN), label="other", source="127.0.0.2"
        ) as other:
            assert isinstance(other.join("other"), Welcome)
        member.barrier()
        member.close()
    log = server.stderr_tail(1_000_000)
    assert log.count("auth_failed") >= flood
    for secret in (TOKEN, WRONG, escape(TOKEN)):
        assert secret not in log, "a token reached the log"
    assert grown < 8 * 1024, f"RSS grew by {grown} KiB"
    print(f"\n{impl}: {flood} wrong tokens (burst {AUTH_BURST}): all refused, RSS +{grown} KiB")
