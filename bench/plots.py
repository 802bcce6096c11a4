"""One PNG per job of a run, written next to its JSON: fan-out bars, latency distributions.

This module needs matplotlib, the ``bench`` extra (``pip install -e '.[bench]'``); without
it ``python -m bench`` still writes its tables and JSON, and says why there are no plots.
Figures are built as :class:`matplotlib.figure.Figure` without pyplot: no display, no global
state.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from .runner import si

#: How each latency load is titled.
LOADS = {"fixed": "fixed load", "half_peak": "half of the peak fan-out"}


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _title(results: dict[str, Any], text: str) -> str:
    if results.get("settings", {}).get("quick"):
        return f"{text}\nsmoke run (--quick): not meaningful"
    return text


def fanout_figure(results: dict[str, Any]) -> Figure | None:
    """Deliveries per second for each peer: a bar at the median, a dot per measured round.

    ``None`` if the run has no fan-out results. A peer whose deliveries were not all accounted
    for is hatched and labelled so.
    """
    fanout: dict[str, Any] = results.get("fanout") or {}
    if not fanout:
        return None
    figure = _figure(1.6 + 1.3 * len(fanout), 4.2)
    axes = figure.add_subplot()
    names = list(fanout)
    medians = [_finite(fanout[name]["deliveries_per_second"]) for name in names]
    bars = axes.bar(names, medians, color="#4c72b0", zorder=2)
    for index, name in enumerate(names):
        summary = fanout[name]
        rounds = [r["per_second"] for run in summary.get("runs", ()) for r in run.get("rounds", ())]
        axes.plot([index] * len(rounds), rounds, "o", color="black", markersize=3, zorder=3)
        if not summary.get("accounted"):
            bars[index].set_hatch("//")
            bars[index].set_facecolor("#dd8452")
    labels = [si(value) + _unaccounted(fanout[n]) for n, value in zip(names, medians, strict=True)]
    axes.bar_label(bars, labels=labels)
    settings = results.get("settings", {})
    axes.set_ylabel("deliveries per second (median of rounds)")
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: si(value)))
    axes.grid(axis="y", alpha=0.3, zorder=0)
    axes.set_title(
        _title(
            results,
            f"Fan-out: {settings.get('subscribers')} subscribers, {settings.get('publishers')} publisher(s),"
            f" {settings.get('size')}-byte texts",
        ),
        fontsize="medium",
    )
    return figure


def latency_figure(results: dict[str, Any]) -> Figure | None:
    """For each load, one line per peer: the fraction of deliveries within a latency.

    ``None`` if the run has no latency distributions.
    """
    latency: dict[str, Any] = results.get("latency") or {}
    loads = [load for load in LOADS if any(load in by_load for by_load in latency.values())]
    if not loads:
        return None
    figure = _figure(5.5 * len(loads), 4.2)
    for column, load in enumerate(loads, 1):
        axes = figure.add_subplot(1, len(loads), column)
        for name, by_load in latency.items():
            cdf = by_load.get(load, {}).get("cdf", {})
            if not cdf.get("ms"):
                continue  # no timed deliveries
            # A log axis has no place for 0 (or NaN): such quantiles are left out.
            points = [(ms, q) for ms, q in zip(cdf["ms"], cdf["quantiles"], strict=True) if ms > 0]
            rate = by_load[load]["messages_per_second"]
            axes.step(
                [ms for ms, _ in points],
                [q for _, q in points],
                where="post",
                label=f"{name} ({rate:,.0f} msg/s)",
            )
        axes.set_xscale("log")
        # Plain numbers at the decades, none at the minor ticks (they collide on a log axis).
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_ylim(0, 1.005)
        axes.set_xlabel("send to receipt, ms (log scale)")
        axes.set_ylabel("fraction of deliveries")
        axes.grid(alpha=0.3, which="both")
        if axes.get_lines():
            axes.legend(fontsize="small", loc="lower right")
        axes.set_title(_title(results, f"Latency at {LOADS[load]}"), fontsize="medium")
    return figure


def write(results: dict[str, Any], json_path: Path) -> list[Path]:
    """Save each job's figure as ``<json stem>-<job>.png`` beside ``json_path``; the paths written."""
    written = []
    for job, build in (("fanout", fanout_figure), ("latency", latency_figure)):
        figure = build(results)
        if figure is not None:
            path = json_path.with_name(f"{json_path.stem}-{job}.png")
            figure.savefig(path, dpi=110)
            written.append(path)
    return written


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _unaccounted(summary: dict[str, Any]) -> str:
    return "" if summary.get("accounted") else "\nnot accounted"
