"""Attacks on both running servers: decode amplification (spec §4.2 rule 9, §4.3 rule 8),
log injection (§14.3) and look-alike or invisible names (§6).

Each test starts its own server on port 0 and stops it, checking that it exits with status 0
and logged no traceback (``crowd.running``). Ordering comes from ping/pong barriers.
"""

from __future__ import annotations

import pickle

import pytest
from crowd import running

from conformance.serverproc import BUNDLED, ServerProcess
from conformance.wire import WirePeer
from protocol import Left, get_codec
from protocol.constants import ErrorCode

MIB = 1 << 20
QUIET = ("--log-level", "ERROR")


@pytest.fixture(params=sorted(BUNDLED))
def impl(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def cpu(server: ServerProcess) -> float:
    seconds = server.cpu_seconds()
    assert seconds is not None, "no /proc: CPU checks need Linux"
    return seconds


def peak_rss(server: ServerProcess) -> int:
    kib = server.peak_rss_kib()
    assert kib is not None, "no /proc: memory checks need Linux"
    return kib


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


#: One legal 1 MiB frame per codec whose payload, decoded whole, builds about a million
#: objects: msgpack, an array 32 of empty arrays (about 0.6 s and 80 MiB unbounded); pickle,
#: a list of EMPTY_SET (about 2 s and 250 MiB).
AMPLIFIERS = {
    "msgpack": frame(b"\xdd" + (MIB - 5).to_bytes(4, "big") + b"\x90" * (MIB - 5)),
    "pickle": frame(b"\x80\x04](" + b"\x8f" * (MIB - 6) + b"e."),
}
ATTACKS = 10


# --- decode amplification --------------------------------------------------------------------------


@pytest.mark.parametrize("codec", sorted(AMPLIFIERS))
def test_amplification_frames_are_refused_cheaply_and_the_room_goes_on(impl: str, codec: str) -> None:
    with running(impl, *QUIET, "--codec", codec) as server:
        alice = WirePeer(server.address, codec=get_codec(codec), label="alice")
        alice.join("alice")
        assert alice.barrier() == []
        cpu_before, peak_before = cpu(server), peak_rss(server)
        for attack in range(ATTACKS):
            with WirePeer(server.address, codec=get_codec(codec), label=f"mallory{attack}") as mallory:
                if attack % 2:  # a member's frame costs as much as a stranger's
                    mallory.join(f"mallory{attack}")
                mallory.send_raw(AMPLIFIERS[codec], "1 MiB amplifier", tolerate_close=True)
                error = mallory.expect_error(ErrorCode.BAD_PAYLOAD, fatal=True)
                assert "more than 4096" in error.message
                mallory.wait_closed()
            seen = alice.barrier()
            if attack % 2:
                assert [m.reason for m in seen if isinstance(m, Left)] == ["error"]
        spent = cpu(server) - cpu_before
        grown = peak_rss(server) - peak_before
        alice.close()
    # Unbounded, these ten frames cost the server 6 s (msgpack) to 20 s (pickle) of CPU.
    # Refusing one takes about 1 ms (msgpack) or 2 ms (pickle, bench/decode.py); the bound
    # is generous because it also pays for reading 10 MiB, 20 connections and the barriers,
    # on a machine shared with other work.
    print(f"\n{impl} {codec}: {ATTACKS} amplifiers cost {spent * 1000:.0f} ms of CPU, peak RSS +{grown} KiB")
    assert spent < 1.0, f"{ATTACKS} amplification frames took {spent:.2f} s of server CPU"
    # Each frame is read whole (1 MiB, copied a few times on the way) before it is refused;
    # decoding one would hold 80 MiB (msgpack) or 250 MiB (pickle) at its peak.
    assert grown < 48 * 1024, f"the server's peak resident size grew by {grown} KiB"


# --- log injection ---------------------------------------------------------------------------------------

#: A terminal escape (clear screen, cursor home) then a forged record at the start of a line.
FORGED_LINE = "2024-01-01 00:00:00,000 WARNING protocol.server: forged record"
INJECTION = "\x1b[2J\x1b[H\n" + FORGED_LINE


def stack_global(module: str, name: str) -> bytes:
    """PROTO 4, SHORT_BINUNICODE module, SHORT_BINUNICODE name, STACK_GLOBAL, STOP: names a
    global by two strings, which (unlike GLOBAL's lines) may hold any code point."""

    def text(value: str) -> bytes:
        data = value.encode()
        return b"\x8c" + bytes([len(data)]) + data

    return b"\x80\x04" + text(module) + text(name) + b"\x93."


@pytest.mark.parametrize("codec", ["msgpack", "pickle"])
def test_no_raw_control_character_from_a_peer_reaches_the_log(impl: str, codec: str) -> None:
    # The default log level (INFO): refusals are logged with the peer's text in them.
    with running(impl, "--codec", codec) as server:
        alice = WirePeer(server.address, codec=get_codec(codec), label="alice")
        alice.join("alice")
        alice.send_value({"type": INJECTION})  # unknown_type, quoting the type
        alice.expect_error(ErrorCode.UNKNOWN_TYPE, fatal=False)
        alice.send_value({"type": "hello", "name": "x"})  # already joined
        alice.expect_error(ErrorCode.ALREADY_JOINED, fatal=False)
        with WirePeer(server.address, codec=get_codec(codec), label="namer") as namer:
            namer.send_value({"type": "hello", "name": INJECTION})
            namer.expect_error(ErrorCode.NAME_INVALID, fatal=False)
            namer.send_value({"type": INJECTION})  # hello_required, quoting the type
            namer.expect_error(ErrorCode.HELLO_REQUIRED, fatal=True)
        if codec == "pickle":
            hostile = [
                b"\x80\x02cos\x1b[2J\rforged\nsys\x1b]0;title\x07tem\n.",  # GLOBAL: one line each
                stack_global("os" + INJECTION, "system" + INJECTION),
                b"\x80\x02\x1b[2J",  # the C unpickler quotes an unknown opcode raw
            ]
            for number, payload in enumerate(hostile):
                with WirePeer(server.address, codec=get_codec(codec), label=f"gadget{number}") as gadget:
                    gadget.send_raw(frame(payload), "hostile pickle", tolerate_close=True)
                    gadget.expect_error(ErrorCode.BAD_PAYLOAD, fatal=True)
        assert alice.barrier() == []
        alice.close()
    log = server.stderr_tail(100_000)
    assert "unknown_type" in log, log  # the refusals were logged...
    if codec == "pickle":
        assert "is forbidden" in log, log
    assert "\x1b" not in log and "\x07" not in log and "\r" not in log  # ...without raw controls
    for line in log.splitlines():
        assert line.isprintable(), repr(line)
        assert not line.startswith(FORGED_LINE), line


def test_a_lone_surrogate_from_a_pickle_peer_does_not_break_the_log(impl: str) -> None:
    # A UTF-8 log cannot encode U+D800: written raw it would fail the record ("Logging error").
    with (
        running(impl, "--codec", "pickle") as server,
        WirePeer(server.address, codec=get_codec("pickle"), label="surrogate") as peer,
    ):
        peer.send_raw(frame(pickle.dumps({"type": "\ud800"}, protocol=2)), "type U+D800")
        peer.expect_error(ErrorCode.HELLO_REQUIRED, fatal=True)
    log = server.stderr_tail(100_000)
    assert "Logging error" not in log, log
    assert "\\ud800" in log, log


# --- look-alike and invisible names ----------------------------------------------------------------------

#: While ``alice`` is present: each look-alike is taken, each invisible name is invalid.
LOOK_ALIKES = ["\u0430lice", "\u0430l\u0456ce", "ALICE", "\uff41\uff4c\uff49\uff43\uff45", "AIice"]
INVISIBLE = [
    "alice\ufe0f",
    "alice\u034f",
    "\u3164",
    "\u2800",
    "\uffa0",
    "\u3164" * 5,
    "\u115f\u1160",
    "al\u3164ice",
    "alice\U000e0100",
]


@pytest.mark.parametrize("codec", ["msgpack", "pickle"])
def test_no_one_can_join_under_a_look_alike_or_an_invisible_name(impl: str, codec: str) -> None:
    with running(impl, *QUIET, "--codec", codec) as server:
        alice = WirePeer(server.address, codec=get_codec(codec), label="alice")
        alice.join("alice")
        mallory = WirePeer(server.address, codec=get_codec(codec), label="mallory")
        for name in LOOK_ALIKES:
            mallory.send_value({"type": "hello", "name": name})
            error = mallory.expect_error(ErrorCode.NAME_TAKEN, fatal=False)
            assert error.message.isprintable()
        for name in INVISIBLE:
            mallory.send_value({"type": "hello", "name": name})
            error = mallory.expect_error(ErrorCode.NAME_INVALID, fatal=False)
            assert error.message.isprintable() and "U+" in error.message
        # Nobody joined meanwhile, and the name is free once alice leaves.
        assert alice.barrier() == []
        alice.half_close()
        alice.wait_closed()
        alice.close()
        welcome = mallory.join("\u0430lice")
        assert (welcome.name, welcome.clients) == ("\u0430lice", 1)
        mallory.close()
