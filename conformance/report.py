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


def terminal_matrix(runs: Sequence[RunResult], cases: Iterable[Case]) -> str:
    rows = _rows(runs, cases)
    headers = ["case", "§", "level", *(run.column for run in runs)]
    table = [[row[0], row[1], row[2], *(_CELL[c] for c in row[4])] for row in rows]
    widths = [max(len(line[i]) for line in [headers, *table]) for i in range(len(headers))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in table]
    return "\n".join(lines)


def terminal_summary(runs: Sequence[RunResult]) -> str:
    lines = []
    for run in runs:
        counts = run.summary()
        text = ", ".join(f"{counts[o]} {o}" for o in OUTCOMES)
        lines.append(f"{run.column:28} {text}  ({run.duration:.1f} s)")
        lines += [f"{'':28} error: {error.splitlines()[0]}" for error in run.errors]
    return "\n".join(lines)


def failure_details(runs: Sequence[RunResult]) -> str:
    """Each failed or warned case: what was expected, what came, and the transcript."""
    blocks = []
    for run in runs:
        for item in run.cases:
            if item["outcome"] not in ("fail", "warn"):
                continue
            head = f"{item['outcome'].upper()} {run.column} {item['id']} (§{item['section']} {item['level']})"
            block = [f"=== {head}: {item['title']}", item["message"]]
            if item["transcript"]:
                block += [
                    "--- transcript (seconds since the case began; >> sent, << received) ---",
                    item["transcript"],
                ]
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
