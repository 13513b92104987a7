"""``max_concurrency="auto"`` in the benchmark: what each run shows beyond its time, the claims
of issue #20 checked against this run's medians, and their part of docs/benchmarks.md.

Everything here reads the plain data that goes into docs/benchmarks.json (a run is the worker's
result plus what the orchestrator added; a case is an entry of ``summary["cases"]``), so that
the figures can be checked on made-up runs and recomputed from a saved JSON file.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Literal

MB = 1_000_000
AUTO: Literal["auto"] = "auto"
# Where a case's requests go (see tools/bench/run.py): straight to the registry, or through a
# fault proxy that caps each connection, caps it for the first seconds only, or caps it and
# answers a share of the Range requests with 429.
LOOPBACK = "loopback"
CAP = "per-connection cap"
CAP_LIFT = "changing cap"
STORM = "429 storm"

# The thresholds: auto against N=1 and against the best fixed N of the same run.
LOOPBACK_MIN_VS_N1 = 0.95
CAP_MIN_VS_N1 = 3.2
CAP_MIN_VS_BEST = 0.9
LIFT_MIN_VS_BEST = 0.85

# (row, scenario, TLS, worker kind): the groups of cases that each claim compares.
CLAIM_GROUPS: tuple[tuple[str, str, bool, str], ...] = (
    ("loopback, to a file", LOOPBACK, False, "acr-blob-file"),
    ("loopback, iterating", LOOPBACK, False, "acr-blob-stream"),
    ("TLS, to a file", LOOPBACK, True, "acr-blob-file"),
    ("TLS, iterating", LOOPBACK, True, "acr-blob-stream"),
    ("per-connection cap, to a file", CAP, False, "acr-blob-file"),
    ("changing cap, to a file", CAP_LIFT, False, "acr-blob-file"),
    ("429 storm, to a file", STORM, False, "acr-blob-file"),
)

# The controller's change of target, as acr_blob._adaptive logs it.
_CHANGE = re.compile(r"auto: (\d+) -> (\d+) connection")
_THROTTLED_SHED = "shed (throttled)"


# --- one run ----------------------------------------------------------------------------------


def connection_steps(auto_log: Sequence[Sequence[Any]], origin: float) -> dict[str, Any]:
    """The connection count over one run, from the controller's ``auto:`` lines
    (``[monotonic time, message]``): ``steps`` as ``[seconds since origin, count]`` from the one
    stream it starts with, the ``most`` and the count at the ``end``, and how many times a 429
    or 503 made it shed one."""
    steps: list[list[float]] = [[0.0, 1]]
    sheds = 0
    for at, message in auto_log:
        change = _CHANGE.match(str(message))
        if change is not None:
            steps.append([round(float(at) - origin, 3), int(change.group(2))])
        if _THROTTLED_SHED in str(message):
            sheds += 1
    counts = [int(count) for _, count in steps]
    return {"steps": steps, "most": max(counts), "end": counts[-1], "sheds": sheds}


def bytes_at(points: Sequence[Sequence[float]], when: float) -> float:
    """The bytes received by ``when``, from ``[time, bytes]`` progress reports in time order:
    linear between the reports around it (they come at most ten times a second)."""
    before_time, before_bytes = points[0]
    if when <= before_time:
        return float(before_bytes)
    for at, received in points[1:]:
        if at >= when:
            if at == before_time:
                return float(received)
            share = (when - before_time) / (at - before_time)
            return before_bytes + (received - before_bytes) * share
        before_time, before_bytes = at, received
    return float(before_bytes)


def lift_figures(run: Mapping[str, Any], size: int) -> dict[str, float | None]:
    """MB/s before and after the lift of the cap (from the first blob request to the lift, and
    from the lift to the end of the download call), and the share of the blob left at the
    lift; all None without the figures, and the last two when the download was over by
    then."""
    figures: dict[str, float | None] = dict.fromkeys(
        ("before_lift_mbps", "after_lift_mbps", "left_at_lift")
    )
    trace = run.get("trace")
    keys = ("started_at", "ended_at", "first_request_at", "lift_at")
    if not run.get("ok") or trace is None or any(run.get(key) is None for key in keys):
        return figures
    started, ended, first, lift = (float(run[key]) for key in keys)
    if ended <= lift:
        figures["before_lift_mbps"] = size / (ended - first) / MB
        return figures
    at_lift = bytes_at([[started, 0], *trace], lift)
    if lift > first:
        figures["before_lift_mbps"] = at_lift / (lift - first) / MB
    figures["after_lift_mbps"] = (size - at_lift) / (ended - lift) / MB
    figures["left_at_lift"] = (size - at_lift) / size
    return figures


def annotate(run: dict[str, Any], size: int) -> None:
    """Add the derived figures to a finished run: the connection counts of an ``"auto"`` run,
    the rates around the lift of a changing-cap run."""
    origin = run.get("first_request_at") or run.get("started_at")
    if run.get("auto_log") is not None and origin is not None:
        run["connections"] = connection_steps(run["auto_log"], origin)
    if run.get("lift_at") is not None:
        run.update(lift_figures(run, size))


def median_of(runs: Sequence[Mapping[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if run.get("ok") and run.get(key) is not None]
    return statistics.median(values) if values else None


def median_run(runs: Sequence[Mapping[str, Any]], key: str) -> Mapping[str, Any] | None:
    """The successful run whose ``key`` is the median (the lower middle of an even count)."""
    ranked = sorted(
        (run for run in runs if run.get("ok") and run.get(key) is not None),
        key=lambda run: float(run[key]),
    )
    return ranked[(len(ranked) - 1) // 2] if ranked else None


# --- the claims -------------------------------------------------------------------------------


def _ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value is not None and reference else None


def _at_least(ratio: float | None, threshold: float) -> bool | None:
    return None if ratio is None else ratio >= threshold


def _both(*verdicts: bool | None) -> bool | None:
    if False in verdicts:
        return False
    return None if None in verdicts else True


def _storm_verdict(group: Sequence[Mapping[str, Any]], auto: Mapping[str, Any]) -> bool | None:
    runs = [run for case in group for run in case["runs"]]
    if not runs:
        return None
    if not all(run.get("ok") for run in runs):
        return False
    counted = [run["connections"] for run in auto["runs"] if "connections" in run]
    if not counted:
        return None
    return all(count["end"] < count["most"] for count in counted)


def _verdict(
    scenario: str,
    vs_n1: float | None,
    vs_best: float | None,
    group: Sequence[Mapping[str, Any]],
    auto: Mapping[str, Any],
) -> tuple[str, bool | None]:
    if scenario == LOOPBACK:
        return f"auto ≥ {LOOPBACK_MIN_VS_N1}x N=1", _at_least(vs_n1, LOOPBACK_MIN_VS_N1)
    if scenario == CAP:
        return (
            f"auto ≥ {CAP_MIN_VS_N1}x N=1 and ≥ {CAP_MIN_VS_BEST}x best",
            _both(_at_least(vs_n1, CAP_MIN_VS_N1), _at_least(vs_best, CAP_MIN_VS_BEST)),
        )
    if scenario == CAP_LIFT:
        return f"after the lift, auto ≥ {LIFT_MIN_VS_BEST}x best", _at_least(
            vs_best, LIFT_MIN_VS_BEST
        )
    return (
        "right bytes in every run; auto ends on fewer connections than its most",
        _storm_verdict(group, auto),
    )


def _figure(case: Mapping[str, Any] | None, metric: str) -> dict[str, Any] | None:
    if case is None:
        return None
    return {"case": case["name"], "mbps": case.get(metric)}


def claims(cases: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per scenario that has an ``"auto"`` case: N=1, N=4, the best fixed N, auto, the
    ratios, the claim and whether it holds (None: a figure it needs was not measured)."""
    rows: list[dict[str, Any]] = []
    for label, scenario, tls, kind in CLAIM_GROUPS:
        group = [
            case
            for case in cases
            if case["scenario"] == scenario
            and case["tls"] == tls
            and case["kind"] == kind
            and not case["cached"]
            and case.get("unavailable") is None
        ]
        auto = next((case for case in group if case["max_concurrency"] == AUTO), None)
        if auto is None:
            continue
        metric = "after_lift_mbps" if scenario == CAP_LIFT else "median_mbps"
        fixed = {
            case["max_concurrency"] or 1: case for case in group if case["max_concurrency"] != AUTO
        }
        measured = {n: case[metric] for n, case in fixed.items() if case.get(metric) is not None}
        best = max(measured, key=measured.__getitem__) if measured else None
        auto_speed = auto.get(metric)
        vs_n1 = _ratio(auto_speed, measured.get(1))
        vs_best = _ratio(auto_speed, measured.get(best)) if best is not None else None
        claim, holds = _verdict(scenario, vs_n1, vs_best, group, auto)
        if holds is None and auto["runs"] and not any(run.get("ok") for run in auto["runs"]):
            holds = False  # auto ran and failed every time: no claim holds
        rows.append(
            {
                "scenario": label,
                "measure": "MB/s after the lift" if scenario == CAP_LIFT else "MB/s",
                "n1": _figure(fixed.get(1), metric),
                "n4": _figure(fixed.get(4), metric),
                "best": None
                if best is None
                else {"n": best, "case": fixed[best]["name"], "mbps": measured[best]},
                "auto": _figure(auto, metric),
                "auto_vs_n1": vs_n1,
                "auto_vs_best": vs_best,
                "claim": claim,
                "holds": holds,
            }
        )
    return rows


# --- the report -------------------------------------------------------------------------------


def fmt_speed(mbps: float | None) -> str:
    if mbps is None:
        return "-"
    return f"{mbps:.0f}" if mbps >= 100 else f"{mbps:.1f}" if mbps >= 10 else f"{mbps:.2f}"


def _fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _fmt_holds(holds: bool | None) -> str:
    return "not measured" if holds is None else "yes" if holds else "**NO**"


def _cell(figure: Mapping[str, Any] | None) -> str:
    return "-" if figure is None else fmt_speed(figure["mbps"])


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def steps_text(steps: Sequence[Sequence[float]], lift_after: float) -> str:
    """``1 (0.00 s) → 2 (0.51 s) → …``, with the lift where it falls."""
    lift = f"**cap lifted ({lift_after:.2f} s)**"
    parts = [f"{int(count)} ({at:.2f} s)" for at, count in steps]
    before = sum(1 for at, _ in steps if at < lift_after)
    return " → ".join([*parts[:before], lift, *parts[before:]])


def _per_run_counts(runs: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(
        f"{run['connections']['most']}→{run['connections']['end']}"
        for run in runs
        if run.get("ok") and "connections" in run
    )


def case_notes(entry: Mapping[str, Any]) -> list[str]:
    """What the table's notes say of a case beyond its speed."""
    notes: list[str] = []
    runs = entry["runs"]
    counts = _per_run_counts(runs)
    if counts:
        notes.append(f"connections most→end per run: {counts}")
    if entry["scenario"] == CAP_LIFT and runs:
        after = entry.get("after_lift_mbps")
        notes.append(
            "finished before the lift"
            if after is None
            else f"after the lift {fmt_speed(after)} MB/s (median)"
        )
    if entry["scenario"] == STORM and runs:
        answers = [run["throttled_answers"] for run in runs if "throttled_answers" in run]
        notes.append("429s per run: " + ", ".join(map(str, answers)))
        if answers and not any(answers):
            notes.append("no Range request, so the storm never touched it")
    return notes


def default_verdict(rows: Sequence[Mapping[str, Any]]) -> str:
    """Whether this run lets ``"auto"`` be the default: only if it was never slower than one
    stream beyond noise (every loopback claim holds)."""
    slower = [
        row["scenario"]
        for row in rows
        if row["scenario"].startswith(("loopback", "TLS")) and row["holds"] is False
    ]
    if not slower:
        return (
            '**Default: `max_concurrency="auto"`**, for auto was nowhere slower than one stream '
            "beyond noise in this run."
        )
    return (
        "**Default: this run says 1**, for auto was slower than one stream here: "
        + ", ".join(slower)
        + '. The default is `"auto"`: look into the loss before the next release. It costs a '
        "trial of more connections wherever the process is not CPU-bound (a disk-bound write is "
        "not), and one trial undone is a loss on a short download."
    )


def render_section(
    rows: Sequence[Mapping[str, Any]],
    cases: Sequence[Mapping[str, Any]],
    *,
    lift_after: float,
    storm_every: int,
) -> str:
    """The ``max_concurrency="auto"`` section: the claims, then the changing cap's and the
    storm's details."""
    lines = [
        '## max_concurrency="auto"',
        "",
        "Each claim of issue #20 against this run's medians: auto against N=1 and against the "
        "best fixed N (among the counts this run measured) of the same scenario. On the "
        "changing cap the figure is the rate after the lift alone; on the 429 storm, the whole "
        "download.",
        "",
        "| scenario | measure | N=1 | N=4 | best fixed N | auto | auto/N=1 | auto/best "
        "| claim | holds |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        best = row["best"]
        best_cell = "-" if best is None else f"N={best['n']}: {fmt_speed(best['mbps'])}"
        cells = [
            row["scenario"],
            row["measure"],
            _cell(row["n1"]),
            _cell(row["n4"]),
            best_cell,
            _cell(row["auto"]),
            _fmt_ratio(row["auto_vs_n1"]),
            _fmt_ratio(row["auto_vs_best"]),
            row["claim"],
            _fmt_holds(row["holds"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", default_verdict(rows)]
    lifted = [case for case in cases if case["scenario"] == CAP_LIFT and case["runs"]]
    if lifted:
        lines += _lift_section(lifted, lift_after)
    storm = [case for case in cases if case["scenario"] == STORM and case["runs"]]
    if storm:
        lines += _storm_section(storm, storm_every)
    lines.append("")
    return "\n".join(lines)


def _lift_section(cases: Sequence[Mapping[str, Any]], lift_after: float) -> list[str]:
    lines = [
        "",
        "### Changing cap",
        "",
        f"The proxy lifts its per-connection cap {lift_after:g} s after each run's first blob "
        "request, on the connections already open too. Before: from that request to the lift; "
        "after: from the lift to the end of the download call (the less of the blob is left "
        "at the lift, the more the end of the download, fsync and rename, weighs in it).",
        "",
        "| case | MB/s before the lift | MB/s after the lift | runs after the lift, MB/s "
        "| left at the lift | whole download, MB/s |",
        "| --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for case in cases:
        runs = case["runs"]
        after_runs = ", ".join(
            fmt_speed(run.get("after_lift_mbps")) if run.get("ok") else "failed" for run in runs
        )
        left = median_of(runs, "left_at_lift")
        cells = [
            case["name"],
            fmt_speed(median_of(runs, "before_lift_mbps")),
            fmt_speed(case.get("after_lift_mbps")),
            after_runs,
            "-" if left is None else f"{left:.0%}",
            fmt_speed(case.get("median_mbps")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    fixed = [c for c in cases if c["max_concurrency"] != AUTO and c.get("after_lift_mbps")]
    fastest = max(fixed, key=lambda case: float(case["after_lift_mbps"]), default=None)
    if fastest is not None and (fastest["max_concurrency"] or 1) == 1:
        lines += [
            "",
            "After the lift, one stream was the fastest here. To a file, parallel parts hash "
            "by reading the file back, a pass over every byte that one stream, hashing as it "
            "receives, does not make. To match it, auto would have to find out from inside its "
            "parts that one stream is now faster, go back to one, and wait for its running "
            "parts and their hash to finish, all within what is left of the download.",
        ]
    auto = next((case for case in cases if case["max_concurrency"] == AUTO), None)
    if auto is not None:
        lines += [
            "",
            "How auto's connection count moved (count, and seconds since the first blob "
            "request, at each change):",
            "",
        ]
        for run in auto["runs"]:
            if not run.get("ok") or "connections" not in run:
                lines.append(f"- round {run.get('round', '?')}: failed")
                continue
            after = fmt_speed(run.get("after_lift_mbps"))
            lines.append(
                f"- round {run.get('round', '?')}: "
                f"{steps_text(run['connections']['steps'], lift_after)}; "
                f"{run['connections']['end']} at the end; {after} MB/s after the lift"
            )
    return lines


def _storm_section(cases: Sequence[Mapping[str, Any]], storm_every: int) -> list[str]:
    lines = [
        "",
        "### 429 storm",
        "",
        f"The proxy caps each connection as in the throttled rows and answers every "
        f"{ordinal(storm_every)} Range request with 429 and `Retry-After: 1`. N=1 makes no Range "
        "request. Right bytes: runs whose download the SDK verified and whose file the bench "
        "hashed again.",
        "",
        "| case | right bytes | seconds (median) | runs, s | 429s, per run "
        "| connections most→end, per run |",
        "| --- | --- | ---: | --- | --- | --- |",
    ]
    for case in cases:
        runs = case["runs"]
        ok = [run for run in runs if run.get("ok")]
        seconds = median_of(runs, "seconds")
        cells = [
            case["name"],
            f"{len(ok)} of {len(runs)}",
            "-" if seconds is None else f"{seconds:.1f}",
            ", ".join(f"{run['seconds']:.1f}" if run.get("ok") else "failed" for run in runs),
            ", ".join(str(run.get("throttled_answers", "-")) for run in runs),
            _per_run_counts(runs) or "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
