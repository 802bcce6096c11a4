"""``python -m fuzz TARGET [--runs N | --seconds S]``: fuzz one target (or ``all``).

Engines: atheris (libFuzzer, coverage-guided; the default when it is installed) and
hypothesis (the fallback, random structured inputs). Both start from the seed corpus
(:mod:`fuzz.corpus`). A finding is written to ``--artifacts`` (default ``fuzz-findings/``)
as ``crash-<sha1>``, or ``timeout-``/``oom-`` for inputs that are too slow or too large;
the exit status is then non-zero. atheris keeps the inputs that found new coverage in
``--corpus`` (default ``fuzz-findings/corpus-TARGET/``), so a later run goes on from
there. Arguments after ``--`` go to libFuzzer unchanged.

Examples::

    python -m fuzz server_core --seconds 600
    python -m fuzz all --runs 20000
    python -m fuzz codecs --engine hypothesis --runs 5000
    python -m fuzz connection --seconds 60 -- -max_len=8192
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from protocol.options import positive_int, seconds

from . import TARGET_NAMES

#: Seconds one input may take before libFuzzer calls it a finding (a denial of service).
INPUT_TIMEOUT = 10
#: Memory the fuzzing process may use, in MiB, before libFuzzer calls the input a finding.
RSS_LIMIT_MB = 2048


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fuzz", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", choices=[*TARGET_NAMES, "all"])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--runs", type=positive_int, help="inputs to run (seeds included)")
    budget.add_argument("--seconds", type=seconds, help="time to run, per target")
    parser.add_argument(
        "--engine",
        choices=["atheris", "hypothesis"],
        default="atheris" if importlib.util.find_spec("atheris") else "hypothesis",
        help="default: atheris when installed, else hypothesis (now: %(default)s)",
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        help="atheris corpus, kept between runs (default: ARTIFACTS/corpus-TARGET)",
    )
    parser.add_argument("--artifacts", type=Path, default=Path("fuzz-findings"), help="where findings go")
    parser.epilog = "Arguments after -- go to libFuzzer."
    ours, libfuzzer = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = parser.parse_args(ours)
    args.libfuzzer = libfuzzer
    if args.runs is None and args.seconds is None:
        args.runs = 10_000
    return args


def _run_all(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Each target in its own process: libFuzzer ends the process when it is done."""
    status = 0
    for name in TARGET_NAMES:
        command = [sys.executable, "-m", "fuzz", name, *[a for a in argv if a != "all"]]
        print(f"== {name}", flush=True)
        status = max(status, subprocess.run(command, check=False).returncode)
    return status


def _atheris(args: argparse.Namespace) -> int:
    # Optional (the "fuzz" extra; wheels for Linux x86-64 only); imported by name so that type
    # checking needs no stubs.
    atheris = importlib.import_module("atheris")
    # Coverage feedback comes from the package's bytecode and the opcode reader the unpickler
    # scan uses: both are imported, for the first time, inside this block to be instrumented.
    with atheris.instrument_imports(include=["protocol", "pickletools"]):
        from .corpus import seed_corpus, write_corpus  # noqa: PLC0415
        from .targets import TARGETS  # noqa: PLC0415

    corpus = args.corpus or args.artifacts / f"corpus-{args.target}"
    write_corpus(seed_corpus(), corpus)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    options = [
        f"-timeout={INPUT_TIMEOUT}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-artifact_prefix={args.artifacts}/",
        "-print_final_stats=1",
    ]
    if args.runs is not None:
        options.append(f"-runs={args.runs}")
    else:
        options.append(f"-max_total_time={max(1, round(args.seconds))}")
    atheris.Setup([sys.argv[0], *options, *args.libfuzzer, str(corpus)], TARGETS[args.target])
    atheris.Fuzz()  # runs until the budget is spent or a finding, then ends the process
    return 0


def _hypothesis(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the atheris engine must import the package first, itself.
    from hypothesis import HealthCheck, given, settings  # noqa: PLC0415

    from .corpus import seed_corpus  # noqa: PLC0415
    from .inputs import fuzz_inputs  # noqa: PLC0415
    from .targets import TARGETS  # noqa: PLC0415

    seeds = seed_corpus()
    target = TARGETS[args.target]
    last: list[bytes] = []

    def run(data: bytes) -> None:
        last[:] = [data]
        target(data)

    started = time.monotonic()
    for seed in seeds:
        _guarded(run, seed, args.artifacts)
    done = len(seeds)
    batch = 500
    check = settings(
        max_examples=batch, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )(given(fuzz_inputs(seeds))(run))
    while (args.runs is not None and done < args.runs) or (
        args.seconds is not None and time.monotonic() - started < args.seconds
    ):
        try:
            check()
        except Exception:
            # Hypothesis replays the shrunk failing input last, so ``last`` holds it.
            _save(last[0], args.artifacts)
            raise
        done += batch
    print(f"Done {done} runs in {time.monotonic() - started:.0f} second(s) (hypothesis engine)")
    return 0


def _guarded(run: Callable[[bytes], None], data: bytes, artifacts: Path) -> None:
    try:
        run(data)
    except Exception:
        _save(data, artifacts)
        raise


def _save(data: bytes, artifacts: Path) -> None:
    artifacts.mkdir(parents=True, exist_ok=True)
    path = artifacts / f"crash-{hashlib.sha1(data, usedforsecurity=False).hexdigest()}"
    path.write_bytes(data)
    print(f"finding written to {path} ({len(data)} octets)", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _arguments(argv)
    if args.target == "all":
        return _run_all(args, argv)
    if args.engine == "atheris":
        return _atheris(args)
    return _hypothesis(args)


if __name__ == "__main__":
    sys.exit(main())
