"""Every numeric flag of every command: out-of-range values are one-line argparse errors.

Ports are never wrapped modulo 65536, sizes and counts are at least 1 (or their own floor),
durations are finite, positive and short enough for an event loop to wait for. The parsers
are called in-process; one subprocess per server shows that the entry points use them.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from bench.runner import parse_args as bench_args
from chatwire_client.__main__ import parse_args as client_args
from conformance.runner import build_parser as conformance_parser
from fuzz.__main__ import _arguments as fuzz_args
from protocol.constants import MAX_TIMEOUT, MAX_WIRE_LENGTH, MIN_MAX_FRAME
from protocol.options import ServerOptions, int_within, number_within, parse_server_options
from protocol.server import Deadlines
from protocol.serving import make_core

ROOT = Path(__file__).resolve().parent.parent


def server_args(argv: Sequence[str]) -> ServerOptions:
    return parse_server_options("chatwire-server", "test", argv)


def refusal(parse: Callable[[list[str]], Any], argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line ``parse`` exits with (status 2, as argparse does)."""
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert ": error: " in last
    return last.split(": error: ", 1)[1]


SERVER_REFUSED = [
    (["--port", "65536"], "argument --port: must be within 0..65535, not 65536"),
    (["--port", "99999"], "argument --port: must be within 0..65535, not 99999"),
    (["--port", "-1"], "argument --port: must be within 0..65535, not -1"),
    (["--port", "http"], "argument --port: must be an integer, not 'http'"),
    (
        ["--max-frame", "1023"],
        f"argument --max-frame: must be within {MIN_MAX_FRAME}..{MAX_WIRE_LENGTH}, not 1023",
    ),
    (
        ["--max-frame", str(MAX_WIRE_LENGTH + 1)],
        f"argument --max-frame: must be within 1024..{MAX_WIRE_LENGTH}, not 4294967296",
    ),
    (["--max-frame", "1e6"], "argument --max-frame: must be an integer, not '1e6'"),
    (["--max-output-buffer", "0"], "argument --max-output-buffer: must be at least 1, not 0"),
    (["--max-output-buffer", "-5"], "argument --max-output-buffer: must be at least 1, not -5"),
    (["--hello-timeout", "0"], "argument --hello-timeout: must be greater than 0 and at most 86400, not 0"),
    (["--hello-timeout", "-1"], "argument --hello-timeout: must be greater than 0 and at most 86400, not -1"),
    (
        ["--hello-timeout", "nan"],
        "argument --hello-timeout: must be greater than 0 and at most 86400, not nan",
    ),
    (
        ["--hello-timeout", "inf"],
        "argument --hello-timeout: must be greater than 0 and at most 86400, not inf",
    ),
    # An epoll or select wait of this many milliseconds overflows a C int.
    (
        ["--hello-timeout", "1e12"],
        "argument --hello-timeout: must be greater than 0 and at most 86400, not 1e12",
    ),
    (["--hello-timeout", "soon"], "argument --hello-timeout: must be a number, not 'soon'"),
]


@pytest.mark.parametrize(
    ("argv", "error"), SERVER_REFUSED, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_the_servers_refuse_out_of_range_numbers(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert refusal(server_args, argv, capsys) == error


def test_the_servers_accept_the_bounds() -> None:
    low = server_args(
        ["--port", "0", "--max-frame", "1024", "--max-output-buffer", "1", "--hello-timeout", "0.001"]
    )
    assert (low.port, low.max_frame, low.max_output_buffer, low.hello_timeout) == (0, 1024, 1, 0.001)
    high = server_args(["--port", "65535", "--max-frame", str(MAX_WIRE_LENGTH), "--hello-timeout", "86400"])
    assert (high.port, high.max_frame, high.hello_timeout) == (65535, MAX_WIRE_LENGTH, MAX_TIMEOUT)


#: The bounds of §7.5, §10.1, §10.2 and §14.2: flag, a value to set, the core's attribute or
#: timer that must carry it.
BOUNDS = [
    ("--output-soft-limit", "4096", "output_soft_limit"),
    ("--slow-consumer-timeout", "2.5", "_slow"),
    ("--hold-mark", "2048", "hold_mark"),
    ("--hold-patience", "1.5", "_patience"),
    ("--frame-timeout", "3.5", "_frame"),
    ("--idle-timeout", "4.5", "_idle"),
    ("--read-budget", "1000", "read_budget"),
    ("--max-total-output", "5000", "max_total_output"),
    ("--max-total-input", "6000", "max_total_input"),
]


@pytest.mark.parametrize(("flag", "value", "attribute"), BOUNDS)
def test_every_bound_reaches_the_core_and_refuses_zero(
    flag: str, value: str, attribute: str, capsys: pytest.CaptureFixture[str]
) -> None:
    core = make_core(server_args([flag, value]), "impl_select")
    carried = getattr(core, attribute)
    assert (carried.duration if isinstance(carried, Deadlines) else carried) == float(value)
    default = make_core(server_args([]), "impl_select")
    carried = getattr(default, attribute)
    assert (carried.duration if isinstance(carried, Deadlines) else carried) != float(value)
    assert "must be" in refusal(server_args, [flag, "0"], capsys)


@pytest.mark.parametrize("impl", ["impl_select", "impl_asyncio"])
def test_a_server_started_on_an_impossible_port_says_so_in_one_line(impl: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", impl, "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""  # above all no "listening on" line
    assert (
        result.stderr.splitlines()[-1]
        == f"python -m {impl}: error: argument --port: must be within 0..65535, not 99999"
    )


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--port", "0"], "argument --port: must be within 1..65535, not 0"),
        (["--port", "65536"], "argument --port: must be within 1..65535, not 65536"),
        (
            ["--port", "7000", "--timeout", "-0.5"],
            "argument --timeout: must be greater than 0 and at most 86400, not -0.5",
        ),
    ],
)
def test_the_client_refuses_out_of_range_numbers(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert refusal(client_args, [*argv, "--name", "x"], capsys) == error


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--timeout-scale", "0"], "argument --timeout-scale: must be greater than 0 and at most 100, not 0"),
        (
            ["--timeout-scale", "nan"],
            "argument --timeout-scale: must be greater than 0 and at most 100, not nan",
        ),
        (
            ["--timeout-scale", "1e9"],
            "argument --timeout-scale: must be greater than 0 and at most 100, not 1e9",
        ),
        (["--target", "127.0.0.1:70000"], "argument --target: the port must be within 1..65535, not 70000"),
        (["--target", "127.0.0.1:0"], "argument --target: the port must be within 1..65535, not 0"),
        (["--target", "localhost"], "argument --target: must be HOST:PORT, not 'localhost'"),
    ],
)
def test_the_conformance_runner_refuses_out_of_range_numbers(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert refusal(conformance_parser().parse_args, argv, capsys) == error


def test_the_conformance_runner_takes_a_bracketed_ipv6_target() -> None:
    assert conformance_parser().parse_args(["--target", "[::1]:65535"]).target == ("::1", 65535)


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--runs", "0"], "argument --runs: must be at least 1, not 0"),
        (["--subscribers", "-3"], "argument --subscribers: must be at least 1, not -3"),
        (["--publishers", "0"], "argument --publishers: must be at least 1, not 0"),
        (["--messages", "0"], "argument --messages: must be at least 1, not 0"),
        (["--size", "19"], "argument --size: must be at least 20, not 19"),
        (["--clients", "1"], "argument --clients: must be at least 2, not 1"),
        (["--duration", "inf"], "argument --duration: must be greater than 0 and at most 86400, not inf"),
        (["--duration", "0"], "argument --duration: must be greater than 0 and at most 86400, not 0"),
    ],
)
def test_the_bench_refuses_out_of_range_numbers(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert refusal(bench_args, argv, capsys) == error


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["codecs", "--runs", "0"], "argument --runs: must be at least 1, not 0"),
        (
            ["codecs", "--seconds", "nan"],
            "argument --seconds: must be greater than 0 and at most 86400, not nan",
        ),
    ],
)
def test_the_fuzzer_refuses_out_of_range_numbers(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert refusal(fuzz_args, argv, capsys) == error


def test_the_value_types_take_what_they_document() -> None:
    assert int_within(1, 3)(" 3 ") == 3
    assert int_within(-2)("-2") == -2
    assert number_within(2.0)("2") == 2.0
    assert number_within(2.0)("1e-9") == 1e-9


def test_only_a_server_that_names_its_event_loops_takes_loop(capsys: pytest.CaptureFixture[str]) -> None:
    def asyncio_args(argv: Sequence[str]) -> ServerOptions:
        return parse_server_options("chatwire-asyncio", "test", argv, ("asyncio", "uvloop"))

    assert asyncio_args([]).loop == "auto"
    assert asyncio_args(["--loop", "asyncio"]).loop == "asyncio"
    assert asyncio_args(["--loop", "uvloop"]).loop == "uvloop"
    assert "invalid choice: 'trio'" in refusal(asyncio_args, ["--loop", "trio"], capsys)
    assert refusal(server_args, ["--loop", "asyncio"], capsys) == "unrecognized arguments: --loop asyncio"
