"""Results of runs, and their renderings: terminal matrix, JSON, JUnit XML, Markdown matrix.

The JSON schema ``chat-conformance/1`` (one object per run; several runs make an array)::

    {"schema": "chat-conformance/1", "implementation": "impl_select", "codec": "msgpack",
     "started": "2025-01-01T00:00:00+00:00", "duration": 21.3,
     "summary": {"pass": 90, "fail": 0, "warn": 1, "skip": 8},
     "cases": [{"id": "FRAME-LEN-MAX", "section": "3.2", "level": "MUST",
                "title": "...", "outcome": "pass", "duration": 0.01,
                "message": "", "transcript": ""}]}

``outcome`` is one of pass, fail, warn (a failed SHOULD case), skip; ``message`` holds the
failure (expected, got, where) or the skip reason; ``transcript`` (on fail and warn only)
the timestamped bytes every peer exchanged, hex and decoded.
"""

from __future__ import annotations

import json
import re
import textwrap
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .plugin import CaseResult
from .registry import Case

SCHEMA = "chat-conformance/1"
OUTCOMES = ("pass", "fail", "warn", "skip")


@dataclass
class RunResult:
    """Every case result of one implementation with one codec."""

    implementation: str
    codec: str
    started: str
    duration: float = 0.0
    cases: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: What the reader should know that is no error: e.g. an optional codec the server lacks.
    notes: list[str] = field(default_factory=list)

    @property
    def column(self) -> str:
        return f"{self.implementation}/{self.codec}"

    def summary(self) -> dict[str, int]:
        counts = Counter(c["outcome"] for c in self.cases)
        return {outcome: counts.get(outcome, 0) for outcome in OUTCOMES}

    @property
    def failed(self) -> bool:
        return bool(self.errors) or any(c["outcome"] == "fail" for c in self.cases)

    def add(self, result: CaseResult) -> None:
        case = result.case
        failed = result.outcome in ("fail", "warn")
        self.cases.append(
            {
                "id": case.id,
                "section": case.section,
                "level": case.level.value,
                "title": case.title,
                "outcome": result.outcome,
                "duration": round(result.duration, 4),
                "message": result.message,
                "transcript": result.transcript if failed else "",
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "implementation": self.implementation,
            "codec": self.codec,
            "started": self.started,
            "duration": round(self.duration, 3),
            "summary": self.summary(),
            "errors": self.errors,
            "notes": self.notes,
            "cases": self.cases,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} result: schema {data.get('schema')!r}")
        return cls(
            implementation=data["implementation"],
            codec=data["codec"],
            started=data.get("started", ""),
            duration=data.get("duration", 0.0),
            cases=list(data["cases"]),
            errors=list(data.get("errors", [])),
            notes=list(data.get("notes", [])),
        )


def write_json(path: Path, runs: Sequence[RunResult]) -> None:
    """One run as one object; several as an array of such objects."""
    payload: Any = runs[0].to_json() if len(runs) == 1 else [run.to_json() for run in runs]
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: Path) -> list[RunResult]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [RunResult.from_json(item) for item in (data if isinstance(data, list) else [data])]


def _rows(runs: Sequence[RunResult], cases: Iterable[Case]) -> list[tuple[str, str, str, str, list[str]]]:
    """(id, section, level, title, cell per run), in matrix order; ids only some runs know come last."""
    outcome = [{c["id"]: c for c in run.cases} for run in runs]
    rows = []
    seen: set[str] = set()
    for case in cases:
        seen.add(case.id)
        cells = [by_id[case.id]["outcome"] if case.id in by_id else "-" for by_id in outcome]
        rows.append((case.id, case.section, case.level.value, case.title, cells))
    extra: dict[str, dict[str, Any]] = {}
    for by_id in outcome:
        extra.update({k: v for k, v in by_id.items() if k not in seen})
    for case_id, info in sorted(extra.items()):
        cells = [by_id[case_id]["outcome"] if case_id in by_id else "-" for by_id in outcome]
        rows.append((case_id, info["section"], info["level"], info["title"], cells))
    return rows


_CELL = {"pass": "pass", "fail": "FAIL", "warn": "warn", "skip": "skip", "-": "-"}
#: The terminal report fits this many columns.
WIDTH = 100
#: Transcript lines a failure shows in the terminal without --verbose (the last ones).
TRANSCRIPT_TAIL = 40


def _table(headers: list[str], table: list[list[str]]) -> list[str]:
    widths = [max(len(line[i]) for line in [headers, *table]) for i in range(len(headers))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in table]
    return lines


def terminal_matrix(runs: Sequence[RunResult], cases: Iterable[Case], width: int = WIDTH) -> str:
    """The case x run matrix for a terminal: only cases some run has a result for, at most
    ``width`` columns; run columns are lettered, with a legend, when their names do not fit."""
    rows = [row for row in _rows(runs, cases) if any(cell != "-" for cell in row[4])]
    table = [[row[0], row[1], row[2], *(_CELL[c] for c in row[4])] for row in rows]
    lines = _table(["case", "§", "level", *(run.column for run in runs)], table)
    if max(len(line) for line in lines) <= width:
        return "\n".join(lines)
    letters = [chr(ord("A") + i) if i < 26 else str(i + 1) for i in range(len(runs))]
    lines = _table(["case", "§", "level", *letters], table)
    legend = [f"{letter} = {run.column}" for letter, run in zip(letters, runs, strict=True)]
    one_line = "columns: " + "   ".join(legend)
    footer = [one_line] if len(one_line) <= width else ["columns:", *(f"  {item}" for item in legend)]
    return "\n".join([*lines, "", *footer])


def terminal_summary(runs: Sequence[RunResult]) -> str:
    lines = []
    for run in runs:
        counts = run.summary()
        text = ", ".join(f"{counts[o]} {o}" for o in OUTCOMES)
        lines.append(f"{run.column:28} {text}  ({run.duration:.1f} s)")
        lines += [_clip(f"{'':28} error: {error.splitlines()[0]}") for error in run.errors]
        lines += [_clip(f"{'':28} note: {note.splitlines()[0]}") for note in run.notes]
    return "\n".join(lines)


def _wrap(line: str, width: int) -> list[str]:
    """``line`` in lines of at most ``width`` columns, its indentation kept (never split at a hyphen)."""
    indent = line[: len(line) - len(line.lstrip())]
    return textwrap.wrap(
        line, width, initial_indent=indent, subsequent_indent=indent + "  ", break_on_hyphens=False
    ) or [""]


def _clip(line: str, width: int = WIDTH) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


def skip_summary(runs: Sequence[RunResult], width: int = WIDTH) -> str:
    """Why cases were skipped: each reason once, with the runs and cases it applies to."""
    by_reason: dict[str, dict[str, list[str]]] = {}
    for run in runs:
        for item in run.cases:
            if item["outcome"] == "skip":
                by_reason.setdefault(item["message"], {}).setdefault(item["id"], []).append(run.column)
    if not by_reason:
        return ""
    lines = ["skipped:"]
    for reason, ids in by_reason.items():
        columns = sorted({column for where in ids.values() for column in where})
        every = len(columns) == len(runs)
        lines += textwrap.wrap(
            reason + ("" if every else f" [{', '.join(columns)}]"),
            width,
            initial_indent="- ",
            subsequent_indent="  ",
            break_on_hyphens=False,
        )
        lines += textwrap.wrap(
            ", ".join(ids), width, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False
        )
    return "\n".join(lines)


#: pytest's assertion explanations end with hints about its own -v, which this runner's -v is not.
_PYTEST_HINT = re.compile(r"^\s*(Use -v+ to get (more|the full) diff|Full diff:)", re.IGNORECASE)


def clean_message(text: str) -> str:
    """A failure message without pytest's hints about pytest's command line."""
    return "\n".join(line for line in text.splitlines() if not _PYTEST_HINT.match(line))


def failure_details(runs: Sequence[RunResult], verbose: bool = False, width: int = WIDTH) -> str:
    """Each failed or warned case: what was expected, what came, and the transcript (its last
    lines, clipped to ``width`` columns, unless ``verbose``)."""
    blocks = []
    for run in runs:
        for item in run.cases:
            if item["outcome"] not in ("fail", "warn"):
                continue
            head = f"{item['outcome'].upper()} {run.column} {item['id']} (§{item['section']} {item['level']})"
            block = [f"=== {head}", f"    {item['title']}"]
            block += [
                wrapped
                for line in clean_message(item["message"]).splitlines()
                for wrapped in _wrap(line, width)
            ]
            transcript = item["transcript"].splitlines()
            if transcript:
                shown = transcript if verbose else transcript[-TRANSCRIPT_TAIL:]
                left_out = len(transcript) - len(shown)
                block.append("--- transcript (seconds since the case began; >> sent, << received) ---")
                if left_out:
                    block.append(f"... {left_out} earlier lines left out (-v shows them; so does --json) ...")
                block += shown if verbose else [_clip(line, width) for line in shown]
            blocks.append("\n".join(block))
        for error in run.errors:
            blocks.append(f"=== ERROR {run.column}\n{error}")
    return "\n\n".join(blocks)


def markdown_matrix(runs: Sequence[RunResult], cases: Iterable[Case]) -> str:
    """A Markdown implementation x case matrix with a summary row per implementation."""
    rows = _rows(runs, cases)
    symbol = {"pass": "pass", "fail": "**FAIL**", "warn": "warn", "skip": "skip", "-": "-"}
    lines = [
        "| case | § | level | title | " + " | ".join(run.column for run in runs) + " |",
        "|" + "---|" * (4 + len(runs)),
    ]
    for case_id, section, level, title, cells in rows:
        lines.append(
            f"| {case_id} | {section} | {level} | {title.replace('|', '/')} | "
            + " | ".join(symbol[c] for c in cells)
            + " |"
        )
    lines.append("")
    lines.append("| implementation | " + " | ".join(OUTCOMES) + " | seconds |")
    lines.append("|" + "---|" * (2 + len(OUTCOMES)))
    for run in runs:
        counts = run.summary()
        lines.append(
            f"| {run.column} | " + " | ".join(str(counts[o]) for o in OUTCOMES) + f" | {run.duration:.1f} |"
        )
    return "\n".join(lines) + "\n"


def write_junit(path: Path, runs: Sequence[RunResult]) -> None:
    """JUnit XML: one testsuite per run, one testcase per case (warn counts as failure there)."""
    suites = ET.Element("testsuites", name="chat-conformance")
    for run in runs:
        counts = run.summary()
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=run.column,
            tests=str(len(run.cases)),
            failures=str(counts["fail"] + counts["warn"]),
            errors=str(len(run.errors)),
            skipped=str(counts["skip"]),
            time=f"{run.duration:.3f}",
        )
        for item in run.cases:
            testcase = ET.SubElement(
                suite,
                "testcase",
                classname=run.column,
                name=f"{item['id']} (§{item['section']} {item['level']})",
                time=f"{item['duration']:.3f}",
            )
            if item["outcome"] in ("fail", "warn"):
                failure = ET.SubElement(
                    testcase, "failure", message=item["message"].splitlines()[0] if item["message"] else ""
                )
                failure.text = item["message"]
                if item["transcript"]:
                    ET.SubElement(testcase, "system-out").text = item["transcript"]
            elif item["outcome"] == "skip":
                ET.SubElement(testcase, "skipped", message=item["message"])
        for error in run.errors:
            ET.SubElement(
                ET.SubElement(suite, "testcase", classname=run.column, name="run"), "error"
            ).text = error
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
