"""The charts at the top of docs/benchmarks.md, drawn by `make bench` as SVG with matplotlib (a
development dependency: the orchestrator imports this module only when it writes docs/).

Both read the summary's case entries (as in docs/benchmarks.json), so that they can be drawn
from made-up data in tests. The same data gives the same bytes: the SVG's ids come from a fixed
salt, it carries no date, and its text stays text (no embedded glyphs).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tools.bench.auto import AUTO, CAP, CAP_LIFT, LOOPBACK, MB, median_run

AUTO_COLOUR = "#d62728"
SDK_COLOUR = "#1f77b4"
OTHER_COLOUR = "#9a9a9a"
# The fixed counts' lines on the changing cap: matplotlib's own cycle without its red (auto's).
FIXED_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf")
# The SDK's most connections for "auto" (acr_blob._adaptive.CEILING), the count axis's top.
CEILING = 8
LIMIT_STYLES = ("--", ":", "-.")

# (panel title, the cases it holds, the names drawn as limit lines rather than bars, and the
# prefix its bar labels drop).
Panel = tuple[str, list[Mapping[str, Any]], list[tuple[str, float]], str]


def _settings() -> AbstractContextManager[None]:
    return matplotlib.rc_context(
        {"svg.hashsalt": "acr-blob-bench", "svg.fonttype": "none", "font.size": 9}
    )


def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path, format="svg", metadata={"Date": None})


def _colour(case: Mapping[str, Any]) -> str:
    if case["max_concurrency"] == AUTO:
        return AUTO_COLOUR
    return SDK_COLOUR if "acr-blob" in case["name"] else OTHER_COLOUR


def _panels(cases: Sequence[Mapping[str, Any]]) -> list[Panel]:
    measured = {
        case["name"]: case
        for case in cases
        if case.get("median_mbps") is not None and not case["cached"]
    }

    def limit(name: str, label: str | None = None) -> list[tuple[str, float]]:
        case = measured.get(name)
        return [] if case is None else [(label or name, float(case["median_mbps"]))]

    http_limits = limit("hash-limit") + limit("raw-curl")
    tls_limits = limit("hash-limit") + limit("TLS raw-curl")
    cap_limits = limit("throttled raw-curl", "one connection (throttled raw-curl)")
    if cap_limits:
        cap_limits.append(("8 x one connection", 8 * cap_limits[0][1]))
    limit_names = {"hash-limit", "raw-curl", "TLS raw-curl", "throttled raw-curl"}
    bars = [case for name, case in measured.items() if name not in limit_names]
    panels: list[Panel] = [
        (
            "Loopback, http (1 stream unless marked)",
            [c for c in bars if c["scenario"] == LOOPBACK and not c["tls"]],
            http_limits,
            "",
        ),
        (
            "Loopback, TLS",
            [c for c in bars if c["scenario"] == LOOPBACK and c["tls"]],
            tls_limits,
            "TLS ",
        ),
        (
            "Per-connection cap (the fault proxy's drip)",
            [c for c in bars if c["scenario"] == CAP],
            cap_limits,
            "throttled ",
        ),
    ]
    return [panel for panel in panels if panel[1]]


def _draw_panel(axes: Axes, panel: Panel) -> None:
    title, cases, limits, prefix = panel
    speeds = [float(case["median_mbps"]) for case in cases]
    labels = [str(case["name"]).removeprefix(prefix) for case in cases]
    positions = list(range(len(cases)))
    axes.barh(positions, speeds, color=[_colour(case) for case in cases], height=0.7)
    axes.set_yticks(positions, labels)
    axes.invert_yaxis()
    for position, speed in zip(positions, speeds, strict=True):
        axes.text(speed, position, f" {speed:.0f}", va="center", fontsize=8)
    for (label, value), style in zip(limits, itertools.cycle(LIMIT_STYLES), strict=False):
        axes.axvline(
            value, color="black", linestyle=style, linewidth=1, label=f"{label}: {value:.0f}"
        )
    axes.set_xlim(0, 1.12 * max([*speeds, *(value for _, value in limits)]))
    axes.set_title(title, loc="left", fontsize=10)
    axes.set_xlabel("MB/s, median over the rounds")
    if limits:
        axes.legend(loc="lower right", fontsize=8, framealpha=0.9)


def throughput(cases: Sequence[Mapping[str, Any]], path: Path) -> bool:
    """Horizontal bars of MB/s per client, one panel per group (loopback http, TLS,
    per-connection cap), with the limits as lines; False (nothing written) without data."""
    panels = _panels(cases)
    if not panels:
        return False
    sizes = [len(panel[1]) + 2 for panel in panels]
    with _settings():
        figure = Figure(figsize=(9, 0.26 * sum(sizes) + 0.5), layout="constrained")
        grid = figure.add_gridspec(len(panels), 1, height_ratios=sizes)
        for index, panel in enumerate(panels):
            _draw_panel(figure.add_subplot(grid[index]), panel)
        figure.suptitle(
            "Blob download throughput (red: max_concurrency=auto, blue: acr-blob, grey: others)",
            fontsize=10,
        )
        _save(figure, path)
    return True


def _rate_steps(run: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    """MB/s between successive progress reports of a run, against seconds since its first
    blob request (for a step plot: each rate starts where its interval does)."""
    origin = float(run["first_request_at"])
    points = [(float(run["started_at"]), 0.0), *((float(t), float(b)) for t, b in run["trace"])]
    times: list[float] = []
    rates: list[float] = []
    for (before, had), (at, received) in itertools.pairwise(points):
        if at - before > 1e-3:  # the final report can follow the one before it at once
            times.append(before - origin)
            rates.append((received - had) / (at - before) / MB)
    if times:
        times.append(points[-1][0] - origin)
        rates.append(rates[-1])
    return times, rates


def auto_parts(cases: Sequence[Mapping[str, Any]], lift_after: float, path: Path) -> bool:
    """auto's connection count over time on the changing cap, one step line per round, with
    the lift marked; below, MB/s over time of each changing-cap case's median round. False
    (nothing written) without an auto run to show."""
    lifted = [case for case in cases if case["scenario"] == CAP_LIFT]
    auto_case = next((case for case in lifted if case["max_concurrency"] == AUTO), None)
    if auto_case is None:
        return False
    runs = [
        run
        for run in auto_case["runs"]
        if run.get("ok") and "connections" in run and run.get("first_request_at") is not None
    ]
    if not runs:
        return False
    with _settings():
        figure = Figure(figsize=(9, 6.5), layout="constrained")
        counts, speeds = figure.subplots(2, 1, sharex=True, height_ratios=[1, 1.4])
        most = 1
        for run in runs:
            steps = run["connections"]["steps"]
            end = float(run["ended_at"]) - float(run["first_request_at"])
            times = [float(at) for at, _ in steps] + [end]
            values = [int(count) for _, count in steps]
            most = max(most, *values)
            counts.step(times, [*values, values[-1]], where="post", label=f"round {run['round']}")
        top = max(most, CEILING)
        counts.set_yticks(range(1, top + 1))
        counts.set_ylim(0.5, top + 0.5)
        counts.set_ylabel("auto's connections")
        counts.set_title(
            f"Changing cap: the per-connection cap is lifted {lift_after:g} s after the first "
            "blob request",
            loc="left",
            fontsize=10,
        )
        for axes in (counts, speeds):
            axes.axvline(lift_after, color="black", linestyle="--", linewidth=1, label="cap lifted")
        counts.legend(loc="best", fontsize=8, ncol=3)
        fixed_colours = itertools.cycle(FIXED_COLOURS)
        for case in lifted:
            run = median_run(case["runs"], "after_lift_mbps") or median_run(case["runs"], "mbps")
            if run is None or run.get("trace") is None or run.get("first_request_at") is None:
                continue
            times, rates = _rate_steps(run)
            auto = case["max_concurrency"] == AUTO
            speeds.step(
                times,
                rates,
                where="post",
                label=str(case["name"]).removeprefix("changing cap "),
                color=AUTO_COLOUR if auto else next(fixed_colours),
                linewidth=2 if auto else 1,
            )
        speeds.set_ylabel("MB/s (each case's median round)")
        speeds.set_xlabel("seconds since the run's first blob request")
        speeds.set_xlim(left=0)
        speeds.legend(loc="upper left", fontsize=8)
        _save(figure, path)
    return True
