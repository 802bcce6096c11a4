"""``python -m conformance``: run the suite against servers and print the matrix.

With no target it runs every bundled server with both codecs. ``--server-cmd`` starts any
server from a command template; ``--target`` uses one that is already running. The cases
are pytest tests in :mod:`conformance.cases`, run in-process by ``pytest.main`` with
:class:`~conformance.plugin.ConformancePlugin`.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import pytest

from impl_select.tls import TlsFailure, client_context
from protocol.constants import REQUIRED_CODECS, CodecName
from protocol.options import int_within, number_within, port_number

from . import cases
from .cluster import MAX_CLUSTER_NODES, MIN_CLUSTER_NODES
from .differential import differential_main
from .plugin import PROGRESS_LEGEND, ConformancePlugin, RunOptions, ServerPool
from .redisproc import RedisUnavailable
from .registry import Settings, load_cases, ordered
from .report import (
    RunResult,
    failure_details,
    markdown_matrix,
    read_json,
    skip_summary,
    terminal_matrix,
    terminal_summary,
    write_json,
    write_junit,
)
from .serverproc import BUNDLED, ServerFailed, ServerProcess, stop_all
from .wire import PLAIN, Security

#: ``--timeout-scale`` beyond this would turn a failing case into an hour-long wait.
MAX_TIMEOUT_SCALE = 100.0

CODECS = tuple(codec.value for codec in CodecName)
#: The codecs a server need not offer (§4.1): a server that cannot start with one is skipped on it.
OPTIONAL_CODECS = tuple(codec.value for codec in CodecName if codec not in REQUIRED_CODECS)

EPILOG = """\
server command templates (spec §16.1):
  --server-cmd takes a shell-like command with {host} and {port} placeholders (and
  optionally {codec}). The server prints "listening on HOST:PORT" on stdout (an IPv6 host
  in brackets: "listening on [::1]:5555"), or listens on {port} as given. Unless the
  template contains {codec}, the runner appends "--codec msgpack|pickle"; cases that need
  short limits also append "--hello-timeout SECONDS", "--max-output-buffer BYTES",
  "--max-frame BYTES" or a bound of spec §7.5, §10.1, §10.2 or §14.2 ("--frame-timeout",
  "--idle-timeout", "--output-soft-limit", "--slow-consumer-timeout", "--max-total-output",
  "--max-total-input", "--hold-patience"). A server that accepts none of these flags can be
  run with --no-config-flags (one codec, fixed in the template; those cases are then skipped).
  A wrapper (a shell script, cargo run, npm start) must pass the flags on, and should exec
  the server so that its exit status is the server's: bash -c 'exec ./server "$@"' server.
  The runner starts each server in a process group of its own, signals the group, and
  stops every process of it at the end.

codecs:
  msgpack is required, pickle optional (§4.1). A server that cannot be started with
  "--codec pickle" (while it starts with msgpack) does not offer pickle: its pickle run is
  skipped and says so. A server that starts with pickle claims it, and is judged on it.

a cluster (--cluster-nodes N, spec §16.2):
  The runner starts redis-server on a free loopback port (nothing on disk) and N nodes of
  one room, each with "--cluster redis://HOST:PORT/0 --room conformance" appended; node i
  runs impl_select when i is even and impl_asyncio when odd, or the i-th --server-cmd
  (repeat the option, used in turn). Each case's connections go to the nodes in turn; a
  case about one process (signals, its listening line, its memory) runs once against
  every node; the CLUSTER-* cases run only here. With neither --server-cmd nor --target
  the cluster is a column beside the bundled servers.

against a running server (--target):
  The cases count members and expect to see only what they cause, so the server's room
  must be empty and stay so: before each case the runner joins a probe and asks for the
  roster, and stops at the first member it did not make. Cases that start, signal or
  configure the server are skipped.

examples:
  python -m conformance
  python -m conformance --server-cmd 'python -m impl_select --host {host} --port {port}' --name mine
  python -m conformance --server-cmd './server --port {port}' --codec all
  python -m conformance --target 127.0.0.1:5555 --codec msgpack --case 'FRAME-*'
  python -m conformance --cluster-nodes 2
  python -m conformance --cluster-nodes 3 --server-cmd './server --port {port}' --case 'CLUSTER-*'
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m conformance",
        description="Judge chat servers against spec/PROTOCOL.md.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--server-cmd",
        action="append",
        metavar="TEMPLATE",
        help="start the server under test from this template (repeatable with --cluster-nodes: "
        "node i runs the i-th, in turn)",
    )
    where.add_argument(
        "--target",
        type=_parse_target,
        metavar="HOST:PORT",
        help="an already running server (restarts, signals, configured limits and memory checks are skipped)",
    )
    parser.add_argument(
        "--cluster-nodes",
        type=int_within(MIN_CLUSTER_NODES, MAX_CLUSTER_NODES),
        default=0,
        metavar="N",
        help=f"judge a room served by N nodes on one Redis ({MIN_CLUSTER_NODES} to {MAX_CLUSTER_NODES}; "
        "default: one server)",
    )
    parser.add_argument("--name", help="implementation name for the matrix column (default: derived)")
    parser.add_argument(
        "--codec",
        choices=(*CODECS, "all"),
        help="codec to judge the server in, or all of them (default: msgpack with --server-cmd "
        "or --target; all for the bundled servers)",
    )
    parser.add_argument(
        "--case",
        action="append",
        default=[],
        metavar="GLOB",
        help="run only cases whose id matches (repeatable), e.g. 'FRAME-*'",
    )
    parser.add_argument(
        "--list", action="store_true", help="list the cases (id, section, level, title) and exit"
    )
    parser.add_argument(
        "--timeout-scale",
        type=number_within(MAX_TIMEOUT_SCALE),
        default=1.0,
        metavar="FLOAT",
        help=f"multiply every timeout (slow machines); greater than 0, at most {MAX_TIMEOUT_SCALE:g}",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address started servers listen on (default %(default)s)"
    )
    parser.add_argument(
        "--no-config-flags",
        action="store_true",
        help="never append --codec or the limits' flags (--hello-timeout, --max-frame...)",
    )
    parser.add_argument("--strict", action="store_true", help="a failed SHOULD case fails the run too")
    parser.add_argument("--junitxml", type=Path, metavar="PATH", help="write JUnit XML")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results (schema chat-conformance/1)")
    parser.add_argument("--matrix", type=Path, metavar="PATH", help="write a Markdown matrix of every run")
    parser.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        metavar="JSON",
        help="add the runs of an earlier --json file to the matrix (repeatable)",
    )
    secure = parser.add_argument_group(
        "TLS and access control of the server under test (spec §16.1 rule 5, §17)"
    )
    secure.add_argument("--tls", action="store_true", help="connect over TLS; the TLS-* cases run too")
    secure.add_argument(
        "--tls-ca",
        type=Path,
        metavar="FILE",
        help="CA file to verify the server with (default: the system's)",
    )
    secure.add_argument(
        "--tls-insecure",
        action="store_true",
        help="do not verify the server's certificate (a self-signed one); never for a real deployment",
    )
    secure.add_argument(
        "--tls-server-name", metavar="NAME", help="the name the certificate must hold (default: the host)"
    )
    secure.add_argument(
        "--auth-token",
        metavar="TOKEN",
        help="a token the server admits: every hello presents it; the AUTH-* cases run too",
    )
    secure.add_argument(
        "--auth-reserved",
        metavar="NAME",
        help="a name the server reserves to a token other than --auth-token (AUTH-RESERVED-NAME)",
    )
    parser.add_argument(
        "--differential",
        action="store_true",
        help="also replay one scripted session on every implementation and compare transcripts",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="one line per case, and whole transcripts of failures"
    )
    return parser


def _raise_fd_limit() -> None:
    # Some cases hold over a thousand connections; servers started from here inherit the limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _default_name(template: str) -> str:
    """``python -m impl_x ...`` is named impl_x; anything else by its program's file name."""
    words = shlex.split(template)
    if "-m" in words[:-1]:
        return words[words.index("-m") + 1]
    return Path(words[0]).name if words else "server"


def _parse_target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"must be HOST:PORT, not {text!r}")
    try:
        number = port_number(port)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"the port {exc}") from None
    return host.strip("[]"), number


def run_suite(options: RunOptions) -> tuple[RunResult, list[str]]:
    """Run the selected cases against one implementation with one codec.

    Returns the result and the selection patterns that matched no case.
    """
    started = datetime.now(UTC).isoformat(timespec="seconds")
    result = RunResult(options.name, options.codec, started)
    begin = time.monotonic()
    if options.template is not None:
        problem = _preflight(options)
        if problem:
            result.errors.append(problem)
            result.duration = time.monotonic() - begin
            return result, []
    plugin = ConformancePlugin(options)
    cases_dir = str(Path(cases.__file__).parent)
    # The suite's own configuration only: none from the current directory, no plugins a
    # user happens to have installed, no cache directory written next to the cases.
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    args = [
        cases_dir,
        "-c",
        os.devnull,
        "--rootdir",
        cases_dir,
        "-p",
        "no:cacheprovider",
        "-p",
        "no:terminal",
        "-s",
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
    ]
    options.out.write(f"{options.label}:\n" if options.verbose else "")
    try:
        code = pytest.main(args, plugins=[plugin])
    finally:
        # Whatever happened in there (an interrupt, a crash of the suite), no server outlives it.
        stop_all()
    result.errors += plugin.errors
    if options.skip_all:
        result.notes.append(options.skip_all)
    finished = (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED)
    if code not in finished and not plugin.errors:
        result.errors.append(f"pytest stopped with exit code {int(code)}")
    registry = load_cases()
    by_id = plugin.results
    for case in ordered(registry):
        if case.id in by_id:
            result.add(by_id[case.id])
    result.duration = time.monotonic() - begin
    return result, plugin.unmatched


def _start_once(options: RunOptions, codec: str) -> str:
    """Start the server (or the cluster) with ``codec`` and stop it; what went wrong, or ''."""
    assert options.template is not None
    args = ["--codec", codec] if options.config_flags and "{codec}" not in options.template else []
    if options.cluster_nodes:
        try:
            # Cluster.start stops what it started when a node fails.
            ServerPool(replace(options, codec=codec)).cluster(Settings()).stop()
        except RedisUnavailable as exc:
            return str(exc)
        except (ServerFailed, OSError) as exc:
            return f"a node of the cluster did not start: {exc}"
        return ""
    process = ServerProcess(
        options.template,
        host=options.host,
        extra_args=args,
        codec=codec,
        start_timeout=10.0 * options.timeout_scale,
    )
    try:
        process.start()
    except (ServerFailed, OSError) as exc:
        return f"{' '.join(process.command(0))}\n{exc}"
    finally:
        process.stop()
    return ""


def _preflight(options: RunOptions) -> str:
    """Start the server once, so a server that cannot start is one error, not one per case.

    A server that cannot start with an optional codec but starts with a required one does not
    offer that codec: every case of the run is then skipped with that reason (``skip_all``).
    """
    problem = _start_once(options, options.codec)
    if not problem:
        return ""
    if options.codec in OPTIONAL_CODECS and options.config_flags:
        required = sorted(REQUIRED_CODECS)[0].value
        if not _start_once(options, required):
            lines = [line.strip() for line in problem.splitlines()[1:] if line.strip()]
            said = "; ".join(dict.fromkeys([lines[0], lines[-1]])) if lines else "it did not start"
            options.skip_all = (
                f"the server does not offer the optional {options.codec} codec (§4.1): it starts with "
                f"{required}, not with {options.codec} ({said})"
            )
            return ""
    return f"the server did not start: {problem}"


def _security(args: argparse.Namespace) -> Security:
    """The run's TLS context and token; raises :class:`TlsFailure` for an unusable CA file."""
    context = client_context(args.tls_ca, verify=not args.tls_insecure) if args.tls else None
    return Security(
        tls=context, server_name=args.tls_server_name, token=args.auth_token, reserved_name=args.auth_reserved
    )


def _runs(args: argparse.Namespace, out: TextIO, security: Security = PLAIN) -> list[RunOptions]:
    common = {
        "timeout_scale": args.timeout_scale,
        "host": args.host,
        "config_flags": not args.no_config_flags,
        "selection": tuple(args.case),
        "verbose": args.verbose,
        "strict": args.strict,
        "out": out,
        "security": security,
    }
    chosen = CODECS if args.codec == "all" else (args.codec,) if args.codec else None
    if args.target:
        target = args.target
        name = args.name or f"{target[0]}:{target[1]}"
        return [
            RunOptions(name=name, codec=codec, target=target, **common) for codec in chosen or ("msgpack",)
        ]
    if args.server_cmd and args.cluster_nodes:
        templates = tuple(args.server_cmd)
        name = args.name or _cluster_name(args.cluster_nodes, templates)
        return [
            RunOptions(
                name=name,
                codec=codec,
                template=templates[0],
                cluster_nodes=args.cluster_nodes,
                cluster_templates=templates,
                **common,
            )
            for codec in chosen or ("msgpack",)
        ]
    if args.server_cmd:
        name = args.name or _default_name(args.server_cmd[-1])
        return [
            RunOptions(name=name, codec=codec, template=args.server_cmd[-1], **common)
            for codec in chosen or ("msgpack",)
        ]
    codecs = chosen or CODECS
    runs = [
        RunOptions(name=name, codec=codec, template=template, **common)
        for name, template in BUNDLED.items()
        for codec in codecs
    ]
    if args.cluster_nodes:
        templates = tuple(BUNDLED.values())
        runs += [
            RunOptions(
                name=_cluster_name(args.cluster_nodes, templates),
                codec=codec,
                template=templates[0],
                cluster_nodes=args.cluster_nodes,
                cluster_templates=templates,
                **common,
            )
            for codec in codecs
        ]
    return runs


def _cluster_name(nodes: int, templates: Sequence[str]) -> str:
    """``cluster-2(impl_select+impl_asyncio)``: the column of a cluster run."""
    used = dict.fromkeys(_default_name(templates[i % len(templates)]) for i in range(nodes))
    return f"cluster-{nodes}({'+'.join(used)})"


def list_cases(out: TextIO) -> None:
    registry = ordered(load_cases())
    width = max(len(c.id) for c in registry)
    for item in registry:
        needs = []
        if item.process:
            needs.append("process")
        elif item.isolated:
            needs.append("own server")
        if item.cluster_only:
            needs.append("cluster only")
        elif item.per_node:
            needs.append("per node")
        if item.settings:
            needs.append(item.settings.describe())
        if item.codecs != CODECS:
            needs.append("/".join(item.codecs) + " only")
        extra = f"  [{'; '.join(needs)}]" if needs else ""
        out.write(f"{item.id:{width}}  §{item.section:6} {item.level.value:6} {item.title}{extra}\n")
    out.write(f"{len(registry)} cases\n")


def _check_option_pairs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Options that only make sense together, or never do (exit status 2 through ``parser``)."""
    if args.target and args.cluster_nodes:
        parser.error("--cluster-nodes starts its nodes itself: it cannot judge a --target")
    if args.server_cmd and len(args.server_cmd) > 1 and not args.cluster_nodes:
        parser.error("--server-cmd is given more than once: that names the nodes of --cluster-nodes N")
    if not args.tls and (args.tls_ca or args.tls_insecure or args.tls_server_name):
        parser.error("--tls-ca, --tls-insecure and --tls-server-name go with --tls")
    if args.auth_reserved is not None and args.auth_token is None:
        parser.error("--auth-reserved goes with --auth-token")


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_option_pairs(parser, args)
    if args.list:
        list_cases(out)
        return 0
    try:
        security = _security(args)
    except TlsFailure as exc:
        parser.error(str(exc))
    _raise_fd_limit()
    runs = _runs(args, out, security)
    if not args.verbose:
        out.write(f"{PROGRESS_LEGEND}\n")
    results: list[RunResult] = []
    unmatched: set[str] = set()
    for options in runs:
        result, missing = run_suite(options)
        results.append(result)
        unmatched.update(missing)
    if unmatched:
        out.write(f"no case matches {', '.join(sorted(unmatched))}; see --list\n")
        if len(unmatched) == len({pattern.upper() for pattern in args.case}):
            return 2
    merged = [run for path in args.merge for run in read_json(path)] + results
    registry = ordered(load_cases())
    details = failure_details(results, verbose=args.verbose)
    if details:
        out.write(f"\n{details}\n")
    out.write(f"\n{terminal_matrix(merged, registry)}\n")
    skipped = skip_summary(results)
    if skipped:
        out.write(f"\n{skipped}\n")
    out.write(f"\n{terminal_summary(results)}\n")
    if args.json:
        write_json(args.json, results)
    if args.junitxml:
        write_junit(args.junitxml, results)
    if args.matrix:
        args.matrix.write_text(markdown_matrix(merged, registry), encoding="utf-8")
    failed = any(run.failed for run in results)
    if args.strict:
        failed = failed or any(run.summary()["warn"] for run in results)
    if args.differential:
        failed = differential_main(runs, out) or failed
    verdict = "FAILED" if failed else "conforming"
    out.write(f"\n{verdict}: {len(results)} run(s)\n")
    return 1 if failed else 0
