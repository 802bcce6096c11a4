"""The conformance suite judged: spec coverage, both bundled servers, mutants, differential, reports.

The suite itself runs in subprocesses (``python -m conformance``), as a user runs it. Set
``CONFORMANCE_LONG=1`` to also run every mutant against the whole suite.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import os
import re
import subprocess
import sys
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from tlscerts import make_certs

from conformance import cases, mutants
from conformance.cases.test_names import WHITESPACE
from conformance.differential import INFORMATIVE, compare, normalise, run_session
from conformance.registry import MUST, SHOULD, load_cases, ordered
from conformance.report import (
    SCHEMA,
    RunResult,
    failure_details,
    markdown_matrix,
    read_json,
    skip_summary,
    terminal_matrix,
    write_json,
    write_junit,
)
from conformance.serverproc import BUNDLED, ServerProcess
from conformance.wire import WirePeer
from protocol.constants import ErrorCode

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "spec" / "PROTOCOL.md"
LONG = os.environ.get("CONFORMANCE_LONG") == "1"

#: Sections with MUSTs that no case cites, and why. Each must exist, hold a MUST, and stay uncited.
EXCLUDED_SECTIONS = {
    # Defines the key words ("MUST", "SHOULD", ...); requires nothing itself.
    "2.1": "key words",
    # Client states: every MUST there binds a client (deciding from `fatal`, what it may send).
    "7.2": "client only",
    # Display of untrusted text: binds clients, and is about terminals, not the wire.
    "14.3": "client only",
    # Framing vectors carry arbitrary payloads that are not messages, so a server's answer to them
    # is not specified; the sans-I/O decoder is checked against them by the unit tests, and the
    # server's framing by the FRAME-* cases.
    "15.1": "not observable on the wire",
    # Defines conformance and this suite's reporting; requires nothing of a server.
    "16": "about the suite",
    # A gap in a clustered room's log: a node must fall CLUSTER_LOG_MAXLEN (100,000) entries
    # behind while its lease holds, which no client can make happen in a bounded case; the
    # lease would expire first (§18.5, CLUSTER-NODE-DEATH). tests/test_cluster_rules.py plays it.
    "18.7": "not provokable from outside in bounded time",
}

#: Error codes no case provokes, and why.
NOT_PROVOKED = {
    # A server bug: by definition no input provokes it in a correct server, so no case can.
    ErrorCode.INTERNAL_ERROR: "cannot be provoked from outside",
}


# --- the spec and the registry -----------------------------------------------------------------

_HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)*)\.? ")
_KEYWORD = re.compile(r"\b(MUST|SHALL|REQUIRED)\b")


def spec_sections() -> dict[str, str]:
    """Section number -> its own text (up to the next numbered heading)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in SPEC.read_text(encoding="utf-8").splitlines():
        match = _HEADING.match(line)
        if match:
            current = sections.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line)
    return {number: "\n".join(lines) for number, lines in sections.items()}


def must_sections() -> set[str]:
    return {number for number, text in spec_sections().items() if _KEYWORD.search(text)}


def cited_sections() -> set[str]:
    return {section for case in load_cases().values() for section in case.sections}


def test_the_spec_parser_finds_sections_and_musts() -> None:
    sections = spec_sections()
    assert {"3.2", "5.1", "8.7", "12"} <= set(sections)
    assert {"3.2", "9.4", "12"} <= must_sections()


def test_every_section_with_a_must_is_cited_by_a_case() -> None:
    uncovered = must_sections() - cited_sections() - set(EXCLUDED_SECTIONS)
    assert not uncovered, (
        f"sections with a MUST that no case cites and no exclusion explains: {sorted(uncovered)}"
    )


def test_the_exclusions_are_current() -> None:
    sections = spec_sections()
    musts = must_sections()
    cited = cited_sections()
    for number in EXCLUDED_SECTIONS:
        assert number in sections, f"excluded section §{number} no longer exists"
        assert number in musts, f"excluded section §{number} no longer holds a MUST"
        assert number not in cited, f"excluded section §{number} is cited by a case"


def test_the_registry_is_well_formed() -> None:
    registry = load_cases()
    assert len(registry) >= 40
    sections = spec_sections()
    for case in registry.values():
        assert case.level in (MUST, SHOULD)
        assert case.title.strip(), f"{case.id} has no title"
        for section in case.sections:
            assert section in sections, f"{case.id} cites §{section}, which the spec does not have"
        assert set(case.codecs) <= {"msgpack", "pickle"}


def test_every_error_code_a_server_sends_is_provoked() -> None:
    sources = "".join(
        inspect.getsource(sys.modules[f"{cases.__name__}.{name}"])
        for name in {c.module.rsplit(".", 1)[-1] for c in load_cases().values()}
    )
    for code in ErrorCode:
        provoked = f"ErrorCode.{code.name}" in sources or f'"{code.value}"' in sources
        if code in NOT_PROVOKED:
            assert not provoked, f"{code.value} is listed as not provoked, but a case expects it"
        else:
            assert provoked, f"no case provokes {code.value}"


# --- running the runner -----------------------------------------------------------------------


def run_conformance(tmp_path: Path, *args: str, timeout: float = 200) -> tuple[int, str, list[RunResult]]:
    """``python -m conformance ARGS --json FILE``: exit status, output, results."""
    report = tmp_path / f"results-{len(list(tmp_path.iterdir()))}.json"
    command = [sys.executable, "-m", "conformance", *args, "--json", str(report)]
    completed = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    results = read_json(report) if report.exists() else []
    return completed.returncode, completed.stdout + completed.stderr, results


def run_server(
    tmp_path: Path, template: str, name: str, codec: str, *args: str, scale: float = 2.0
) -> RunResult:
    """One run against a server started from ``template``; fails on a run-level error."""
    options = ["--server-cmd", template, "--name", name, "--codec", codec, "--timeout-scale", str(scale)]
    code, output, results = run_conformance(tmp_path, *options, *args)
    assert len(results) == 1 and not results[0].errors, output[-4000:]
    result = results[0]
    assert code == (1 if result.failed else 0), output[-4000:]
    return result


def selecting(*globs: str) -> list[str]:
    return [arg for glob in globs for arg in ("--case", glob)]


def outcomes(result: RunResult) -> dict[str, dict[str, Any]]:
    return {case["id"]: case for case in result.cases}


def failures(result: RunResult) -> str:
    failed = [c for c in result.cases if c["outcome"] == "fail"]
    return "\n\n".join(f"{c['id']}: {c['message']}\n{c['transcript'][-3000:]}" for c in failed)


#: Each bundled server as the matrix runs it, and impl_asyncio also on asyncio's own loop:
#: the matrix's runs on uvloop when it is installed, as in the tests.
SERVERS = {**BUNDLED, "impl_asyncio-asyncio-loop": f"{BUNDLED['impl_asyncio']} --loop asyncio"}


@pytest.mark.parametrize("implementation", sorted(SERVERS))
def test_bundled_server_passes_the_whole_suite(tmp_path: Path, implementation: str) -> None:
    result = run_server(tmp_path, SERVERS[implementation], implementation, "msgpack")
    assert not result.failed, failures(result)
    assert result.summary()["pass"] >= 90, result.summary()
    skipped = {c["id"]: c["message"] for c in result.cases if c["outcome"] == "skip"}
    assert all(
        "pickle codec only" in reason or "IPv6" in reason or reason.startswith("not applicable")
        for reason in skipped.values()
    ), skipped
    security = {case_id for case_id in outcomes(result) if case_id.startswith(("TLS-", "AUTH-"))}
    assert security and security <= set(skipped), "TLS and AUTH cases are not applicable without the options"


SECURE_TOKEN = "suite-token-0123456789abcdef"


@pytest.mark.parametrize("implementation", sorted(BUNDLED))
def test_bundled_server_passes_the_whole_suite_over_tls_with_a_token(
    tmp_path: Path, implementation: str
) -> None:
    certs = make_certs(tmp_path)
    auth = tmp_path / "auth"
    auth.write_text(f"{SECURE_TOKEN}\nowner owner-token-0123456789abc\n", encoding="utf-8")
    flags = f"--tls-cert {certs.server_cert} --tls-key {certs.server_key} --auth-file {auth}"
    template = f"{BUNDLED[implementation]} {flags}"
    secure = ["--tls", "--tls-ca", str(certs.ca), "--auth-token", SECURE_TOKEN, "--auth-reserved", "owner"]
    result = run_server(tmp_path, template, implementation, "msgpack", *secure)
    assert not result.failed, failures(result)
    assert result.summary()["pass"] >= 120, result.summary()
    by_id = outcomes(result)
    security = [case_id for case_id in by_id if case_id.startswith(("TLS-", "AUTH-"))]
    assert len(security) >= 10 and all(by_id[c]["outcome"] == "pass" for c in security), security
    skipped = {c["id"]: c["message"] for c in result.cases if c["outcome"] == "skip"}
    allowed = ("pickle codec only", "IPv6", "several nodes only")
    assert all(any(why in reason for why in allowed) for reason in skipped.values()), skipped


@pytest.mark.parametrize("base", sorted(BUNDLED))
def test_over_tls_a_busy_server_may_close_a_newcomer_without_a_frame(tmp_path: Path, base: str) -> None:
    # §14.2 rule 3: over TLS the refusal may come before the handshake ends, with no frame.
    # The same mutant is a defect in plaintext (test_mutant_is_caught).
    certs = make_certs(tmp_path)
    template = f"{mutants.command('busy_newcomer_unanswered', base)} --tls-cert {certs.server_cert}"
    template += f" --tls-key {certs.server_key}"
    secure = ["--tls", "--tls-ca", str(certs.ca), *selecting("SERVER-BUSY-INPUT-TOTAL")]
    result = run_server(tmp_path, template, "busy_newcomer_unanswered", "msgpack", *secure)
    assert outcomes(result)["SERVER-BUSY-INPUT-TOTAL"]["outcome"] == "pass", failures(result)


def test_the_runners_tls_options_go_together(tmp_path: Path) -> None:
    for args in (
        ["--tls-ca", str(tmp_path / "ca.pem")],
        ["--auth-reserved", "owner"],
        ["--tls", "--tls-ca", "/nonexistent"],
    ):
        code, output, _ = run_conformance(tmp_path, "--server-cmd", "true {port}", *args)
        assert code == 2, output
        assert "Traceback" not in output, output


PICKLE_SELECTION = ("PICKLE-*", "CODEC-*", "NAME-SURROGATE", "MSG-*", "VEC-*", "GARBAGE-*")
SMOKE_SELECTION = ("WELCOME-*", "FANOUT-ALL-OTHERS", "LEFT-QUIT", "PING-PONG", "WHO-ROSTER", "HELLO-REQUIRED")


@pytest.mark.parametrize("implementation", sorted(BUNDLED))
def test_bundled_server_passes_pickle_cases_and_a_smoke_run(tmp_path: Path, implementation: str) -> None:
    selection = selecting(*PICKLE_SELECTION, *SMOKE_SELECTION)
    result = run_server(tmp_path, BUNDLED[implementation], implementation, "pickle", *selection)
    assert not result.failed, failures(result)
    by_id = outcomes(result)
    for case_id in ("PICKLE-GADGET", "PICKLE-PERSID", "PICKLE-WARNING", "NAME-SURROGATE", "VEC-INVALID"):
        assert by_id[case_id]["outcome"] == "pass", by_id[case_id]


DEFECTS = sorted(name for name, mutant in mutants.MUTANTS.items() if not mutant.legal)
LEGAL = sorted(name for name, mutant in mutants.MUTANTS.items() if mutant.legal)


def test_every_mutant_is_a_defect_with_its_cases_or_a_legal_variant() -> None:
    registry = load_cases()
    for name, mutant in mutants.MUTANTS.items():
        assert bool(mutant.caught_by) != mutant.legal, f"{name}: a defect names cases, a legal variant none"
        for glob in mutant.caught_by:
            assert any(fnmatch.fnmatchcase(case_id, glob) for case_id in registry), f"{name}: {glob}"


@pytest.mark.parametrize("name", DEFECTS)
def test_mutant_is_caught(tmp_path: Path, name: str) -> None:
    mutant = mutants.MUTANTS[name]
    result = run_server(
        tmp_path, mutants.command(name), name, "msgpack", *selecting(*mutant.caught_by), scale=0.5
    )
    assert result.failed, f"mutant {name} ({mutant.description}) passed {mutant.caught_by}"


@pytest.mark.skipif(not LONG, reason="set CONFORMANCE_LONG=1 to run every mutant against the whole suite")
@pytest.mark.parametrize("name", DEFECTS)
def test_mutant_is_caught_by_the_whole_suite(tmp_path: Path, name: str) -> None:
    result = run_server(tmp_path, mutants.command(name), name, "msgpack", scale=0.5)
    caught = [c["id"] for c in result.cases if c["outcome"] == "fail"]
    assert caught, f"mutant {name} passed the whole suite"


def test_a_noncanonical_msgpack_server_passes_every_must(tmp_path: Path) -> None:
    # str 8 for short strings is legal msgpack; only §4.2's encoding SHOULD is broken. The size
    # rules (§8.4-§8.6) are judged in the server's own encoding, so every MUST case passes.
    result = run_server(tmp_path, mutants.command("noncanonical_str8"), "str8", "msgpack")
    assert not result.failed, failures(result)
    by_id = outcomes(result)
    assert by_id["ENCODING-CANONICAL"]["outcome"] == "warn", "the suite must still see the encoding"
    for case_id in ("WHO-ROSTER-TRUNCATED", "PING-TOKEN-LONG", "SAY-TEXT-AT-LIMIT", "SAY-TEXT-TOO-LONG"):
        assert by_id[case_id]["outcome"] == "pass", by_id[case_id]


@pytest.mark.skipif(not LONG, reason="set CONFORMANCE_LONG=1 to run every legal variant on the whole suite")
@pytest.mark.parametrize("name", LEGAL)
def test_legal_variant_passes_the_whole_suite(tmp_path: Path, name: str) -> None:
    result = run_server(tmp_path, mutants.command(name), name, "msgpack")
    assert not result.failed, failures(result)


def test_informal_error_texts_pass_the_error_cases(tmp_path: Path) -> None:
    selection = selecting("ERR-*", "MSG-*", "HELLO-*", "NAME-*", "CODEC-*", "VEC-INVALID", "GARBAGE-*")
    result = run_server(tmp_path, mutants.command("informal_errors"), "informal", "msgpack", *selection)
    assert not result.failed, failures(result)
    assert outcomes(result)["CODEC-MISMATCH-HINT"]["outcome"] == "warn", "the hint is a SHOULD"


def test_a_server_dying_mid_case_is_reported_with_its_stderr(tmp_path: Path) -> None:
    selection = selecting("MSG-UNKNOWN-TYPE", "PING-PONG")
    result = run_server(tmp_path, mutants.command("crash_on_dance"), "crash", "msgpack", *selection)
    by_id = outcomes(result)
    message = by_id["MSG-UNKNOWN-TYPE"]["message"]
    assert "the server died during the case (exit status 70)" in message, message
    assert "exiting on purpose" in message, message
    assert by_id["MSG-UNKNOWN-TYPE"]["transcript"], "a failure carries its transcript"
    assert by_id["PING-PONG"]["outcome"] == "pass", "the next case gets a fresh server"


def test_a_running_target_skips_what_needs_the_process(tmp_path: Path) -> None:
    selection = selecting("SHUTDOWN-SIGTERM", "HELLO-TIMEOUT", "PING-PONG", "FRAME-LEN-HUGE*")
    with ServerProcess(BUNDLED["impl_select"], extra_args=["--codec", "msgpack"]) as server:
        target = f"127.0.0.1:{server.port}"
        code, output, results = run_conformance(tmp_path, "--target", target, "--name", "running", *selection)
        assert server.alive(), "a --target run must not stop the server"
    assert code == 0, output[-3000:]
    by_id = outcomes(results[0])
    assert results[0].implementation == "running"
    assert by_id["PING-PONG"]["outcome"] == "pass"
    assert by_id["FRAME-LEN-HUGE"]["outcome"] == "pass"
    for case_id in ("SHUTDOWN-SIGTERM", "HELLO-TIMEOUT", "FRAME-LEN-HUGE-NO-ALLOC"):
        assert by_id[case_id]["outcome"] == "skip", by_id[case_id]
        assert "--target" in by_id[case_id]["message"]


def test_list_and_unknown_selection(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "conformance", "--list"]
    listed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "FRAME-LEN-MAX" in listed and "§3.2" in listed and "MUST" in listed
    assert f"{len(load_cases())} cases" in listed
    code, output, _ = run_conformance(tmp_path, "--server-cmd", BUNDLED["impl_select"], "--case", "NO-SUCH-*")
    assert code == 2 and "no case matches" in output


def test_a_case_that_skips_itself_is_a_skip_with_its_reason(tmp_path: Path) -> None:
    # Without {host} the server cannot be asked to listen on ::1: HOST-IPV6 cannot judge it.
    template = f"{sys.executable} -m impl_select --port {{port}}"
    result = run_server(tmp_path, template, "no-host", "msgpack", *selecting("HOST-IPV6", "PING-PONG"))
    by_id = outcomes(result)
    assert by_id["HOST-IPV6"]["outcome"] == "skip", by_id["HOST-IPV6"]
    assert "{host}" in by_id["HOST-IPV6"]["message"]
    assert by_id["PING-PONG"]["outcome"] == "pass"


def test_a_server_without_ipv6_is_skipped_on_ipv6_with_its_reason(tmp_path: Path) -> None:
    result = run_server(tmp_path, mutants.command("ipv4_only"), "v4", "msgpack", *selecting("HOST-*"))
    host = outcomes(result)["HOST-IPV6"]
    assert host["outcome"] == "skip" and "::1" in host["message"], host


def test_an_optional_codec_the_server_lacks_is_skipped_not_failed(tmp_path: Path) -> None:
    code, output, results = run_conformance(
        tmp_path, "--server-cmd", mutants.command("no_pickle"), "--codec", "all", *selecting("PING-*")
    )
    assert code == 0, output[-3000:]
    by_codec = {run.codec: run for run in results}
    assert not by_codec["msgpack"].failed and by_codec["msgpack"].summary()["pass"] == 3
    pickle_run = by_codec["pickle"]
    assert not pickle_run.errors and pickle_run.summary()["skip"] == len(pickle_run.cases) == 3
    assert "does not offer the optional pickle codec" in pickle_run.notes[0], pickle_run.notes
    assert "offers no pickle codec" in pickle_run.cases[0]["message"], "the server's own words are kept"


def test_a_server_that_starts_with_no_codec_is_an_error(tmp_path: Path) -> None:
    template = f"{sys.executable} -c 'raise SystemExit(3)' {{port}}"
    code, output, results = run_conformance(tmp_path, "--server-cmd", template, "--codec", "pickle")
    assert code == 1 and results[0].errors and "did not start" in results[0].errors[0], output[-2000:]


def _processes_with(token: str) -> list[int]:
    """Processes whose environment holds ``token`` (Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_a_wrapped_server_is_judged_to_the_end_and_leaves_no_process(tmp_path: Path) -> None:
    # The wrapper dies on SIGTERM while its child keeps the stdout pipe: the runner must still
    # end, with a report, and stop the child too. Its flags are dropped by the wrapper ($0, $1).
    token = f"CONFORMANCE_WRAPPED_{os.getpid()}_{tmp_path.name}"
    template = f"bash -c '{sys.executable} -m impl_select --port {{port}}; true'"
    report = tmp_path / "wrapped.json"
    command = [
        sys.executable,
        "-m",
        "conformance",
        "--server-cmd",
        template,
        "--name",
        "wrapped",
        *selecting("PING-PONG", "SHUTDOWN-SIGTERM", "WELCOME-MAX-FRAME-CONFIGURED"),
        "--json",
        str(report),
    ]
    completed = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, token: "1"},
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1 and report.exists(), output[-3000:]
    by_id = outcomes(read_json(report)[0])
    assert by_id["PING-PONG"]["outcome"] == "pass"
    shutdown = by_id["SHUTDOWN-SIGTERM"]
    assert shutdown["outcome"] == "fail" and "wraps the server" in shutdown["message"], shutdown
    configured = by_id["WELCOME-MAX-FRAME-CONFIGURED"]["message"]
    assert "must pass such flags on" in configured, configured
    assert "wrapped/msgpack" in output and "FAILED" in output
    assert not _processes_with(token), "a process of the wrapped server outlived the run"


def test_a_target_with_someone_in_the_room_is_not_judged(tmp_path: Path) -> None:
    with (
        ServerProcess(BUNDLED["impl_select"], extra_args=["--codec", "msgpack"]) as server,
        WirePeer(server.address, label="bystander") as bystander,
    ):
        bystander.join("bystander")
        target = f"127.0.0.1:{server.port}"
        code, output, results = run_conformance(
            tmp_path, "--target", target, *selecting("PING-*", "JOINED-*", "SCALE-*")
        )
        seen = bystander.barrier()
    assert code == 1, output[-3000:]
    assert "room is not empty" in results[0].errors[0] and "bystander@127.0.0.1" in results[0].errors[0]
    assert {c["outcome"] for c in results[0].cases} == {"skip"}
    # The one probe that found the bystander is all it saw: no flood of joins.
    assert [type(m).__name__ for m in seen] == ["Joined", "Left"], seen


# --- differential ---------------------------------------------------------------------------


def test_both_bundled_servers_tell_the_same_story() -> None:
    sessions = {}
    for name, template in BUNDLED.items():
        with ServerProcess(template, extra_args=["--codec", "msgpack"]) as server:
            sessions[name] = run_session(server.address, "msgpack", timeout=10.0)
    assert len(sessions["impl_select"]["alice"]) > 10
    diff = compare(sessions["impl_select"], sessions["impl_asyncio"], ("impl_select", "impl_asyncio"))
    assert not diff, "\n".join(diff)


def test_the_differential_check_sees_a_difference() -> None:
    sessions = {}
    for name, template in (
        ("reference", BUNDLED["impl_select"]),
        ("mutant", mutants.command("echo_to_sender")),
    ):
        with ServerProcess(template, extra_args=["--codec", "msgpack"]) as server:
            sessions[name] = run_session(server.address, "msgpack", timeout=10.0)
    diff = compare(sessions["reference"], sessions["mutant"])
    assert any('"type": "message"' in line for line in diff if line.startswith("+")), "\n".join(diff)


def test_the_differential_check_compares_only_what_the_spec_fixes(tmp_path: Path) -> None:
    # Other error texts, field order, extra fields and str 8 encodings are all free (§4.2, §5.1,
    # §5.4.7): the runner's --differential must call such a server identical to the reference.
    for name in ("informal_errors", "noncanonical_str8"):
        code, output, _ = run_conformance(
            tmp_path,
            "--server-cmd",
            mutants.command(name),
            "--name",
            name,
            "--case",
            "PING-PONG",
            "--differential",
        )
        assert code == 0 and f"vs {name}/msgpack: identical" in output, output[-3000:]
    code, output, _ = run_conformance(
        tmp_path,
        "--server-cmd",
        mutants.command("left_reason_always_quit"),
        "--case",
        "PING-PONG",
        "--differential",
    )
    assert code == 1 and "DIFFERENT" in output and '"reason": "quit"' in output, output[-3000:]


def test_normalise_keeps_normative_fields_only() -> None:
    free = {"type": "error", "fatal": False, "message": "anything", "code": "bad_message", "x": 1}
    assert normalise(free) == {"type": "error", "code": "bad_message", "message": INFORMATIVE, "fatal": False}
    assert normalise({"type": "welcome?"}) == {"type": "welcome?"}, "not a server message: kept as it is"


# --- reports ----------------------------------------------------------------------------------


def _fake_run(implementation: str, failing: str | None) -> RunResult:
    result = RunResult(implementation, "msgpack", "2025-01-01T00:00:00+00:00", duration=1.5)
    for case in ordered(load_cases())[:5]:
        outcome = "fail" if case.id == failing else "pass"
        result.cases.append(
            {
                "id": case.id,
                "section": case.section,
                "level": case.level.value,
                "title": case.title,
                "outcome": outcome,
                "duration": 0.01,
                "message": "expected x, got y" if failing == case.id else "",
                "transcript": "[peer] 0.0001 >> 00" if failing == case.id else "",
            }
        )
    return result


def test_reports_json_junit_and_markdown(tmp_path: Path) -> None:
    first_case = ordered(load_cases())[0].id
    runs = [_fake_run("good", None), _fake_run("bad", first_case)]
    write_json(tmp_path / "one.json", runs[:1])
    single = json.loads((tmp_path / "one.json").read_text(encoding="utf-8"))
    assert single["schema"] == SCHEMA and single["implementation"] == "good" and single["codec"] == "msgpack"
    assert set(single["cases"][0]) == {
        "id",
        "section",
        "level",
        "title",
        "outcome",
        "duration",
        "message",
        "transcript",
    }
    write_json(tmp_path / "both.json", runs)
    assert [r.implementation for r in read_json(tmp_path / "both.json")] == ["good", "bad"]
    write_junit(tmp_path / "junit.xml", runs)
    suites = ET.parse(tmp_path / "junit.xml").getroot()
    assert [s.get("name") for s in suites] == ["good/msgpack", "bad/msgpack"]
    assert suites[1].get("failures") == "1" and suites[1].find("testcase/failure") is not None
    matrix = markdown_matrix(runs, ordered(load_cases()))
    assert "| case | § | level | title | good/msgpack | bad/msgpack |" in matrix
    assert f"| {first_case} |" in matrix and "**FAIL**" in matrix


def _run_of(column: str, outcomes_by_id: dict[str, tuple[str, str]]) -> RunResult:
    implementation, codec = column.split("/")
    result = RunResult(implementation, codec, "2025-01-01T00:00:00+00:00", duration=1.0)
    for case in ordered(load_cases()):
        if case.id in outcomes_by_id:
            outcome, message = outcomes_by_id[case.id]
            result.cases.append(
                {
                    "id": case.id,
                    "section": case.section,
                    "level": case.level.value,
                    "title": case.title,
                    "outcome": outcome,
                    "duration": 0.01,
                    "message": message,
                    "transcript": "\n".join(f"[peer] {i:9.4f} >> {'00 ' * 60}" for i in range(100)),
                }
            )
    return result


def test_the_terminal_report_reads_well_at_100_columns() -> None:
    registry = ordered(load_cases())
    every = {c.id: ("pass", "") for c in registry}
    runs = [_run_of(f"{impl}/{codec}", every) for impl in BUNDLED for codec in ("msgpack", "pickle")]
    matrix = terminal_matrix(runs, registry)
    lines = matrix.splitlines()
    assert max(map(len, lines)) <= 100 and all(line == line.rstrip() for line in lines), matrix
    assert "A = impl_select/msgpack" in matrix and "D = impl_asyncio/pickle" in matrix
    assert sum(1 for line in lines if line.startswith(registry[0].id + " ")) == 1
    # Only the cases that ran are rows.
    selected = {c.id: ("pass", "") for c in registry if c.id.startswith("FRAME-")}
    small = terminal_matrix([_run_of("impl_select/msgpack", selected)], registry)
    rows = small.splitlines()[2:]
    assert len(rows) == len(selected) and all(row.startswith("FRAME-") for row in rows), small


def test_the_terminal_report_says_why_cases_were_skipped_and_hides_pytest_hints() -> None:
    registry = ordered(load_cases())
    first, second = registry[0].id, registry[1].id
    runs = [
        _run_of(
            "a/msgpack",
            {first: ("skip", "needs IPv6"), second: ("fail", "expected x\n  Use -v to get more diff")},
        ),
        _run_of("b/msgpack", {first: ("skip", "needs IPv6"), second: ("pass", "")}),
    ]
    skipped = skip_summary(runs)
    assert "- needs IPv6\n" in skipped + "\n" and first in skipped, skipped
    assert all(line == line.rstrip() for line in skipped.splitlines())
    details = failure_details(runs)
    assert "expected x" in details and "Use -v" not in details, details
    assert "60 earlier lines left out" in details and max(map(len, details.splitlines())) <= 100
    assert all(line == line.rstrip() for line in details.splitlines()), details
    assert len(failure_details(runs, verbose=True).splitlines()) > len(details.splitlines())


def test_the_whitespace_list_of_the_case_and_the_spec_is_unicode_14s() -> None:
    space = {c for c in range(0x110000) if chr(c).isspace()}
    separators = {c for c in range(0x110000) if unicodedata.category(chr(c)) in ("Zs", "Zl", "Zp")}
    if unicodedata.unidata_version == "14.0.0":
        assert set(WHITESPACE) == space | separators and len(WHITESPACE) == 29
    text = spec_sections()["6.1"]
    listed = re.sub(r"\s+", " ", text)
    assert "29 code points U+0009..U+000D, U+001C..U+0020, U+0085, U+00A0, U+1680," in listed
    assert set(WHITESPACE) <= space | separators, "every listed code point is whitespace in any version"
