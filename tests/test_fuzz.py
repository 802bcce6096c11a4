"""The fuzz smoke (fuzz/): every target over the seed corpus, over generated inputs, and under
atheris for a bounded number of runs; and the findings of longer runs, kept as regressions.

The long runs are ``python -m fuzz TARGET --seconds S`` (see TESTING.md). Here each target
must survive every vector input, a few hundred hypothesis inputs, and a short atheris run
(skipped, saying why, where atheris is not installed: the hypothesis inputs still run).
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz.targets
import protocol.errors
import protocol.server
from fuzz import TARGET_NAMES
from fuzz.corpus import seed_corpus, vector_inputs, write_corpus
from fuzz.inputs import fuzz_inputs
from fuzz.targets import TARGETS, Finding
from protocol import (
    FrameDecoder,
    PickleCodec,
    ProtocolError,
    RemoteProtocolError,
    encode_frame,
)
from protocol.codecs import RestrictedUnpickler
from protocol.constants import ErrorCode

ROOT = Path(__file__).resolve().parent.parent
SEEDS = seed_corpus()


@pytest.fixture(params=TARGET_NAMES)
def target_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_the_command_line_names_every_target() -> None:
    assert set(TARGETS) == set(TARGET_NAMES)


def test_the_seed_corpus_holds_every_vector_input() -> None:
    inputs = vector_inputs()
    assert len(inputs) > 200
    assert set(inputs.values()) <= set(SEEDS)
    assert len(SEEDS) == len(set(SEEDS))


def test_every_target_survives_the_seed_corpus(target_name: str) -> None:
    target = TARGETS[target_name]
    for seed in SEEDS:
        target(seed)


@pytest.mark.parametrize("name", TARGET_NAMES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_target_survives_generated_inputs(name: str, data: st.DataObject) -> None:
    """The hypothesis engine, bounded: raw octets, framed values in both codecs, mutated seeds."""
    TARGETS[name](data.draw(fuzz_inputs(SEEDS), label="input"))


ATHERIS_RUNS = {"frame_decoder": 2000, "codecs": 2000, "connection": 800, "server_core": 600}


def test_atheris_smoke(target_name: str, tmp_path: Path) -> None:
    """A bounded coverage-guided run: the seeds, then mutations of them."""
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed (the 'fuzz' extra: Linux x86-64 wheels only)")
    command = [
        sys.executable,
        "-m",
        "fuzz",
        target_name,
        "--runs",
        str(ATHERIS_RUNS[target_name]),
        "--artifacts",
        str(tmp_path / "findings"),
        "--corpus",
        str(tmp_path / "corpus"),
        "--",
        "-seed=1",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    done = re.search(r"Done (\d+) runs", log)
    assert done is not None and int(done.group(1)) >= ATHERIS_RUNS[target_name], log[-2000:]
    assert not (tmp_path / "findings").exists() or not any(
        p.name.startswith(("crash-", "timeout-", "oom-")) for p in (tmp_path / "findings").iterdir()
    )


def test_the_hypothesis_engine_runs_when_asked(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "fuzz", "codecs", "--engine", "hypothesis", "--runs", "400"]
    command += ["--artifacts", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "hypothesis engine" in result.stdout


def test_write_corpus_names_files_by_content(tmp_path: Path) -> None:
    write_corpus([b"a", b"bc", b"a"], tmp_path)
    assert sorted(p.read_bytes() for p in tmp_path.iterdir()) == [b"a", b"bc"]


# --- the targets can fail: each catches the bug it exists for ----------------------------------


@pytest.fixture
def long_error_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo the fix for the oversized error frames fuzzing found (TESTING.md, Findings)."""
    monkeypatch.setattr(protocol.errors, "MAX_MESSAGE_LENGTH", 1 << 30)


#: Its error quotes the 1000 octets: over MIN_MAX_FRAME as an error frame, while the frame fits it.
PICKLE_LONG_STRING_ERROR = b"S" + b"A" * 1000 + b"\n."


@pytest.mark.usefixtures("long_error_messages")
@pytest.mark.parametrize("name", ["codecs", "connection", "server_core"])
def test_a_target_reports_an_error_that_would_not_fit_a_frame(name: str) -> None:
    data = PICKLE_LONG_STRING_ERROR if name == "codecs" else encode_frame(PICKLE_LONG_STRING_ERROR)
    with pytest.raises(Finding):
        TARGETS[name](data)


def test_the_codecs_target_reports_an_object_a_codec_should_not_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An unpickler that resolves globals, as the seed's did: NEWOBJ then builds an instance.
    monkeypatch.setattr(RestrictedUnpickler, "find_class", lambda self, module, name: object)
    with pytest.raises(Finding, match="decoded a object"):
        TARGETS["codecs"](b"\x80\x02cbuiltins\nobject\n)\x81.")


def test_the_frame_decoder_target_reports_a_decoder_that_disagrees_with_the_schema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class OffByOne(FrameDecoder):
        def __init__(self, max_frame: int) -> None:
            super().__init__(max_frame + 1)

    monkeypatch.setattr(fuzz.targets, "FrameDecoder", OffByOne)
    with pytest.raises(Finding):
        TARGETS["frame_decoder"]((10).to_bytes(4, "big") + bytes(10))


def test_the_server_core_target_reports_an_exception_turned_into_internal_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object) -> None:
        raise KeyError("room")

    monkeypatch.setattr(protocol.server.ServerRules, "_roster_frame", broken)
    who = encode_frame(b"\x81\xa4type\xa3who")
    with pytest.raises(Finding, match="internal_error"):
        TARGETS["server_core"](who)


# --- findings: what longer runs found, now in spec/vectors/invalid.json -------------------------

FINDINGS = ["tuple-key-hash-bomb", "frozenset-hash-bomb", "colliding-int-keys", "error-quoting-long-input"]


def finding_vectors() -> list[Any]:
    document = json.loads((ROOT / "spec" / "vectors" / "invalid.json").read_text(encoding="utf-8"))
    return [
        pytest.param(vector, id=vector["id"])
        for vector in document["vectors"]
        if any(vector["id"].endswith(f"-{finding}") for finding in FINDINGS)
    ]


def test_every_finding_is_a_vector() -> None:
    assert len(finding_vectors()) == len(FINDINGS)


@pytest.mark.parametrize("vector", finding_vectors())
def test_a_finding_is_refused_at_once(vector: dict[str, Any]) -> None:
    # Unfixed, the hash bombs would run for 2**64 steps: no time bound here could be too generous.
    payload = bytes.fromhex(vector["hex"])[4:]
    started = time.monotonic()
    with pytest.raises(RemoteProtocolError) as info:
        PickleCodec().decode(payload)
    assert time.monotonic() - started < 5
    assert info.value.code is ErrorCode.BAD_PAYLOAD
    assert len(info.value.message) <= protocol.errors.MAX_MESSAGE_LENGTH
    for name in TARGET_NAMES:
        TARGETS[name](bytes.fromhex(vector["hex"]))


def test_colliding_int_keys_at_scale_are_refused_in_linear_time() -> None:
    # 40,000 keys that hash alike (the pickle is written by hand: building the dict here would
    # take as long as the attack). Unfixed, decoding takes about 7 s; the scan refuses at once.
    keys = b"".join(pickle.dumps(k * ((1 << 61) - 1), protocol=2)[2:-1] + b"N" for k in range(1, 40_001))
    payload = b"\x80\x02}(" + keys + b"u."
    started = time.monotonic()
    with pytest.raises(RemoteProtocolError, match="must be a str or bytes"):
        PickleCodec().decode(payload)
    assert time.monotonic() - started < 3


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=8)
)
hashables = st.text(max_size=8) | st.binary(max_size=8)
plain = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(hashables, children, max_size=4)
        | st.frozensets(hashables, max_size=4)
        | st.sets(hashables, max_size=4)
    ),
    max_leaves=16,
)


def lowest_protocol(value: Any) -> int:
    """The lowest pickle protocol that writes ``value`` without naming a global.

    Protocols 0 to 2 write bytes, and 0 to 3 sets, only as calls of globals, which are refused (§4.3).
    """
    if isinstance(value, bytes):
        return 3
    if isinstance(value, set | frozenset):
        return max([4, *(lowest_protocol(item) for item in value)])
    if isinstance(value, dict):
        return max([0, *(lowest_protocol(item) for pair in value.items() for item in pair)])
    if isinstance(value, list | tuple):
        return max([0, *(lowest_protocol(item) for item in value)])
    return 0


@settings(max_examples=300, deadline=None)
@given(value=plain, version=st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_the_pickle_scan_accepts_plain_values_in_every_protocol(value: Any, version: int) -> None:
    """The refusals above take nothing from plain values keyed by strings, in any protocol."""
    version = max(version, lowest_protocol(value))
    assert PickleCodec().decode(pickle.dumps(value, protocol=version)) == value


unhashed = st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False) | st.tuples(st.text())


@settings(max_examples=200, deadline=None)
@given(key=unhashed, version=st.integers(0, pickle.HIGHEST_PROTOCOL), where=st.sampled_from(["dict", "set"]))
def test_the_pickle_scan_refuses_every_other_key(key: Any, version: int, where: str) -> None:
    value: Any = {"type": "say", "nested": [{key: 1}]} if where == "dict" else {"type": "say", "s": {key}}
    version = max(version, lowest_protocol(value))
    with pytest.raises(RemoteProtocolError) as info:
        PickleCodec().decode(pickle.dumps(value, protocol=version))
    assert info.value.code is ErrorCode.BAD_PAYLOAD


def test_error_messages_are_cut_short() -> None:
    error = ProtocolError(ErrorCode.BAD_PAYLOAD, "x" * 10_000)
    assert len(error.message) == protocol.errors.MAX_MESSAGE_LENGTH
    assert error.message.endswith("...")
    assert str(error) == error.message
    assert ProtocolError(ErrorCode.BAD_PAYLOAD, "short").message == "short"
