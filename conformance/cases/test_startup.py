"""Starting a server: the limits it refuses, and the line that tells the runner its port (§3.2, §16.1)."""

from __future__ import annotations

import re
import socket

import pytest

from protocol.constants import MAX_WIRE_LENGTH, MIN_MAX_FRAME

from ..context import Context
from ..registry import MUST, SHOULD, Settings, case
from ..serverproc import ServerFailed

_LINE = re.compile(r"^listening on (\S+):(\d+)$")
_BRACKETED = re.compile(r"^listening on \[([0-9A-Fa-f:.]+)\]:(\d+)$")


@case(
    "CONFIG-MAX-FRAME-RANGE",
    "3.2",
    MUST,
    "a server refuses to start with max_frame below 1024 or above 0xFFFFFFFF (no silent clamping)",
    settings=Settings(max_frame=MIN_MAX_FRAME - 1),
    spawns=True,
)
def test_config_max_frame_range(ctx: Context) -> None:
    for value in (MIN_MAX_FRAME - 1, MAX_WIRE_LENGTH + 1):
        try:
            server = ctx.spawn(Settings(max_frame=value))
        except ServerFailed as exc:
            ctx.transcript.note(f"--max-frame {value} refused: {str(exc).splitlines()[0]}")
            continue
        peer = ctx.peer("joiner", address=server.address)
        welcome = peer.join(ctx.name("joiner"))
        raise AssertionError(
            f"started with --max-frame {value}, the server runs and advertises max_frame "
            f"{welcome.max_frame}: it must refuse the value instead (§3.2 rule 4)"
        )


@case(
    "STARTUP-LISTENING-LINE",
    "16.1",
    MUST,
    "started with port 0, the server prints 'listening on HOST:PORT' with the port it accepts on",
    spawns=True,
)
def test_startup_listening_line(ctx: Context) -> None:
    if ctx.template is not None and "{port}" not in ctx.template:
        pytest.skip("the server command template has no {port} placeholder: it fixes its port itself")
    server = ctx.spawn()
    line = server.listening_line
    match = _LINE.match(line)
    assert match, f"expected a line 'listening on HOST:PORT', got {line!r}"
    assert int(match.group(2)) == server.port
    peer = ctx.peer("joiner", address=server.address)
    peer.join(ctx.name("joiner"))


@case(
    "STARTUP-LISTENING-IPV6",
    "16.1",
    SHOULD,
    "listening on an IPv6 address, the line puts the host in brackets: 'listening on [::1]:PORT'",
    spawns=True,
)
def test_startup_listening_ipv6(ctx: Context) -> None:
    if ctx.template is not None and "{host}" not in ctx.template:
        pytest.skip("the server command template has no {host} placeholder")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    try:
        server = ctx.spawn(host="::1")
    except ServerFailed:
        pytest.skip("the server does not listen on ::1 (IPv6 is optional, §1.2)")
    line = server.listening_line
    match = _BRACKETED.match(line)
    assert match and int(match.group(2)) == server.port, (
        f"expected 'listening on [::1]:{server.port}' (RFC 3986 brackets), got {line!r}"
    )
