"""`python -m tools.bench` at CI size: a 1 MiB blob, one round, the cases that need no peers."""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from tools.bench import auto as bench_auto
from tools.bench import charts
from tools.bench import run as bench

CI_CASES = [
    "requests+hashlib",
    "requests+hashlib to file",
    "http.client+hashlib (bare)",
    "http.client+hashlib to file (bare)",
    "acr-blob-stream",
    "acr-blob-file",
    "acr-blob-async",
    "acr-blob-async-file",
    "hash-limit",
]


def _table_rows(output: str, header: str = "| case | MB/s (median) ") -> dict[str, list[str]]:
    """The rows of the printed table whose header starts with `header` (by default the table
    of every case), by their first cell, cells stripped (header and rule left out)."""
    rows: dict[str, list[str]] = {}
    inside = False
    for line in output.splitlines():
        if line.startswith(header):
            inside = True
        elif not line.startswith("| "):
            inside = False
        elif inside and not line.startswith("| ---"):
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            rows[cells[0]] = cells
    return rows


@pytest.mark.usefixtures("registry_binary_path")
def test_ci_sized_run_measures_every_requested_case(capsys: pytest.CaptureFixture[str]) -> None:
    docs = [bench.DOCS / "benchmarks.md", bench.DOCS / "benchmarks.json"]
    before = {path: path.stat().st_mtime_ns for path in docs if path.exists()}
    start = time.monotonic()
    status = bench.main(
        ["--size", "1MiB", "--rounds", "1", "--no-write", "--cases", ",".join(CI_CASES)]
    )
    elapsed = time.monotonic() - start
    output = capsys.readouterr().out

    assert status == 0, output
    assert "# Blob download benchmarks" in output
    rows = _table_rows(output)
    assert sorted(rows) == sorted(CI_CASES), output
    for case in CI_CASES:
        median = float(rows[case][1])  # a number: neither FAILED nor "not installed"
        assert median > 0, rows[case]
    assert rows["requests+hashlib"][3] == "1.00x"  # the baseline against itself
    # Neither raw-curl nor any throttled case was asked for: the limit is the hash alone.
    assert "limit = " in output and "from hash-limit" in output
    assert rows["hash-limit"][4] == "1.00x"
    assert elapsed < 30
    # --no-write leaves docs/ alone.
    assert {path: path.stat().st_mtime_ns for path in docs if path.exists()} == before


@pytest.mark.usefixtures("registry_binary_path")
def test_ci_sized_run_of_the_parallel_and_throttled_cases(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cases = [
        "acr-blob max_concurrency=4",
        "throttled acr-blob-file",
        "throttled acr-blob max_concurrency=4",
        "throttled acr-blob-stream max_concurrency=4",
    ]
    sizes = ["--size", "1MiB", "--throttle-size", "2MiB"]
    status = bench.main([*sizes, "--rounds", "1", "--no-write", "--cases", ",".join(cases)])
    output = capsys.readouterr().out
    assert status == 0, output
    rows = _table_rows(output)
    assert sorted(rows) == sorted(f"{c} (2 MiB)" if "throttled" in c else c for c in cases)
    for cells in rows.values():
        assert float(cells[1]) > 0, cells
    assert "speedup vs N=1" in rows["throttled acr-blob max_concurrency=4 (2 MiB)"][-1]
    # Iterating has no N=1 of its own under the cap: against the one to a file.
    assert "speedup vs N=1" in rows["throttled acr-blob-stream max_concurrency=4 (2 MiB)"][-1]
    assert 'max_concurrency="auto"' not in output  # no auto case, no auto section


@pytest.mark.usefixtures("registry_binary_path")
def test_ci_sized_run_of_the_tls_cases(capsys: pytest.CaptureFixture[str]) -> None:
    # 8 MiB: large enough for the direct reads over TLS, sync and async.
    cases = [name for name in bench.CASE_NAMES if name.startswith("TLS ")]
    assert {"TLS requests+hashlib", "TLS acr-blob-stream", "TLS acr-blob-async-file"} <= set(cases)
    status = bench.main(
        ["--size", "8MiB", "--rounds", "1", "--no-write", "--cases", ",".join(cases)]
    )
    output = capsys.readouterr().out
    assert status == 0, output
    rows = _table_rows(output)
    assert sorted(rows) == sorted(cases)
    for name, cells in rows.items():
        assert float(cells[1]) > 0, cells
        assert cells[3] == cells[4] == "-"  # not against the plain baseline or limit
        if name.startswith("TLS acr-blob"):
            assert "vs TLS requests+hashlib: " in cells[-1], cells
    assert "TLS rows: " in output


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 1 << 20),
        ("64MiB", 64 << 20),
        ("1GiB", 1 << 30),
        ("1G", 1 << 30),
        ("512KiB", 512 << 10),
        ("100MB", 100_000_000),
        ("1.5MiB", 3 << 19),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert bench.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "1XB", "-1MiB", "MiB"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        bench.parse_size(text)


def test_unknown_case_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--cases", "acr-blob-stream,no-such-case", "--no-write"])
    assert exit_info.value.code == 2
    assert "no-such-case" in capsys.readouterr().err


@pytest.mark.usefixtures("registry_binary_path")
def test_ci_sized_run_of_the_cache_hit_case(capsys: pytest.CaptureFixture[str]) -> None:
    cases = [bench.CACHE_HIT, bench.CACHE_BASELINE]
    assert set(cases) <= set(bench.CASE_NAMES)  # `make bench` runs them by default
    status = bench.main(
        ["--size", "1MiB", "--rounds", "1", "--no-write", "--cases", ",".join(cases)]
    )
    output = capsys.readouterr().out
    assert status == 0, output
    rows = _table_rows(output)
    assert sorted(rows) == sorted(cases)
    for cells in rows.values():
        assert float(cells[1]) > 0, cells
        assert cells[3] == cells[4] == "-"  # not against the network baseline or limit
    assert "the cache hit's baseline" in rows[bench.CACHE_BASELINE][-1]
    assert "offline (no request)" in rows[bench.CACHE_HIT][-1]
    assert re.search(r"vs disk copy: \d+\.\d\dx", rows[bench.CACHE_HIT][-1]), rows
    assert "Cache rows: " in output


def test_the_cache_hit_is_compared_with_the_copy() -> None:
    results = []
    for case, speeds in ((bench.CACHE_BASELINE, [400.0]), (bench.CACHE_HIT, [200.0, 300.0])):
        result = bench.CaseResult(next(c for c in bench.CASES if c.name == case), 1 << 20)
        result.runs = [{"ok": True, "mbps": mbps} for mbps in speeds]
        results.append(result)
    summary = bench.summarize(results)
    by_name = {entry["name"]: entry for entry in summary["cases"]}
    assert by_name[bench.CACHE_HIT]["vs_cache_baseline"] == 250.0 / 400.0
    assert by_name[bench.CACHE_BASELINE]["vs_cache_baseline"] == 1.0
    assert "vs_baseline" not in by_name[bench.CACHE_HIT]


# --- max_concurrency="auto": the scenarios, their figures, the claims, the charts -----------

AUTO_RUN_CASES = [
    "acr-blob-file",
    "acr-blob auto",
    "acr-blob-stream",
    "acr-blob-stream auto",
    "throttled acr-blob-file",
    "throttled acr-blob auto",
    "changing cap acr-blob-file",
    "changing cap acr-blob auto",
    "429 storm acr-blob-file",
    "429 storm acr-blob auto",
]


@pytest.mark.usefixtures("registry_binary_path")
def test_ci_sized_run_of_the_auto_scenarios_writes_the_report_and_charts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert set(AUTO_RUN_CASES) <= set(bench.CASE_NAMES)
    arguments = ["--size", "1MiB", "--throttle-size", "2MiB", "--rounds", "1"]
    arguments += ["--no-tls", "--output-dir", str(tmp_path), "--cases", ",".join(AUTO_RUN_CASES)]
    status = bench.main(arguments)
    output = capsys.readouterr().out
    assert status == 0, output

    markdown = (tmp_path / "benchmarks.md").read_text()
    assert output == markdown + "\n"  # what it printed is what it wrote
    for name, _ in bench.CHARTS:
        assert f"]({name})" in markdown
        root = ElementTree.parse(tmp_path / name).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
    # The charts come before any table.
    assert markdown.index("benchmarks-auto-parts.svg") < markdown.index("| scenario |")
    claims = _table_rows(markdown, "| scenario |")
    assert set(claims) == {
        "loopback, to a file",
        "loopback, iterating",
        "per-connection cap, to a file",
        "changing cap, to a file",
        "429 storm, to a file",
    }
    # 2 MiB at the cap is over long before the lift: nothing to judge after it.
    assert claims["changing cap, to a file"][-1] == "not measured"
    assert claims["loopback, to a file"][-1] in ("yes", "**NO**")
    assert "### Changing cap" in markdown and "### 429 storm" in markdown

    data = json.loads((tmp_path / "benchmarks.json").read_text())
    assert data["charts"] == [name for name, _ in bench.CHARTS]
    runs = {case["name"]: case["runs"] for case in data["cases"]}
    for name in AUTO_RUN_CASES:
        [run] = runs[name]
        assert run["ok"], run
        assert run["started_at"] < run["ended_at"]
        if name.endswith(" auto"):
            assert run["connections"]["steps"][0] == [0.0, 1]
    [lifted] = runs["changing cap acr-blob auto"]
    assert lifted["trace"][-1][1] == 2 * 1024 * 1024  # the progress trace ends complete
    assert lifted["lift_at"] == pytest.approx(lifted["first_request_at"] + 2.0)
    [storm_n1] = runs["429 storm acr-blob-file"]
    assert storm_n1["throttled_answers"] == 0  # one stream, no Range request to refuse


def _result(name: str, runs: list[dict[str, Any]]) -> bench.CaseResult:
    result = bench.CaseResult(next(c for c in bench.CASES if c.name == name), 1 << 30)
    result.runs = [{"ok": True, "round": index + 1, **run} for index, run in enumerate(runs)]
    return result


def _counts(most: int, end: int) -> dict[str, Any]:
    return {"steps": [[0.0, 1], [0.5, most], [3.0, end]], "most": most, "end": end, "sheds": 1}


def _synthetic(auto_cap: float = 300.0, auto_loopback: float = 990.0) -> list[bench.CaseResult]:
    results = [
        _result("acr-blob-file", [{"mbps": 1000.0}]),
        _result("acr-blob max_concurrency=2", [{"mbps": 800.0}]),
        _result("acr-blob max_concurrency=4", [{"mbps": 700.0}]),
        _result("acr-blob auto", [{"mbps": auto_loopback, "connections": _counts(2, 1)}]),
        _result("throttled acr-blob-file", [{"mbps": 40.0}]),
        _result("throttled acr-blob max_concurrency=4", [{"mbps": 150.0}]),
        _result("throttled acr-blob max_concurrency=8", [{"mbps": 280.0}]),
        _result("throttled acr-blob auto", [{"mbps": auto_cap}, {"mbps": auto_cap + 10}]),
        _result("changing cap acr-blob-file", [{"mbps": 200.0, "after_lift_mbps": 900.0}]),
        _result("changing cap acr-blob max_concurrency=8", [{"mbps": 400, "after_lift_mbps": 600}]),
        _result(
            "changing cap acr-blob auto",
            [{"mbps": 380.0, "after_lift_mbps": 800.0, "connections": _counts(8, 2)}],
        ),
        _result(
            "429 storm acr-blob-file", [{"mbps": 40.0, "seconds": 26.8, "throttled_answers": 0}]
        ),
        _result(
            "429 storm acr-blob auto",
            [
                {
                    "mbps": 90.0,
                    "seconds": 11.93,
                    "throttled_answers": 9,
                    "connections": _counts(8, 5),
                }
            ],
        ),
    ]
    return results


def test_the_claims_compare_auto_with_n1_and_the_best_fixed_n() -> None:
    summary = bench.summarize(_synthetic())
    rows = {row["scenario"]: row for row in summary["auto"]}
    assert set(rows) == {
        "loopback, to a file",
        "per-connection cap, to a file",
        "changing cap, to a file",
        "429 storm, to a file",
    }
    loopback = rows["loopback, to a file"]
    assert loopback["best"] == {"n": 1, "case": "acr-blob-file", "mbps": 1000.0}
    assert loopback["n4"] == {"case": "acr-blob max_concurrency=4", "mbps": 700.0}
    assert loopback["auto_vs_n1"] == pytest.approx(0.99)
    assert loopback["holds"] is True
    cap = rows["per-connection cap, to a file"]
    assert cap["auto"]["mbps"] == 305.0  # the median of its two runs
    assert cap["best"]["n"] == 8
    assert cap["auto_vs_n1"] == pytest.approx(305 / 40)
    assert cap["auto_vs_best"] == pytest.approx(305 / 280)
    assert cap["holds"] is True
    lifted = rows["changing cap, to a file"]
    assert lifted["measure"] == "MB/s after the lift"
    assert lifted["best"]["n"] == 1 and lifted["auto_vs_best"] == pytest.approx(800 / 900)
    assert lifted["n4"] is None  # not measured in this made-up run
    assert lifted["holds"] is True
    assert rows["429 storm, to a file"]["holds"] is True


def test_a_claim_fails_on_either_threshold() -> None:
    # 0.94x N=1 on loopback; under the cap 5.5x N=1 but only 0.79x the best fixed N.
    rows = {row["scenario"]: row for row in bench.summarize(_synthetic(220, 940))["auto"]}
    assert rows["loopback, to a file"]["holds"] is False
    assert rows["per-connection cap, to a file"]["auto_vs_n1"] == pytest.approx(225 / 40)
    assert rows["per-connection cap, to a file"]["holds"] is False
    results = _synthetic()
    storm_auto = results[-1]
    storm_auto.runs.append({"ok": False, "round": 2, "error": "WrongBytes"})
    storm = {row["scenario"]: row for row in bench.summarize(results)["auto"]}
    assert storm["429 storm, to a file"]["holds"] is False


def test_connection_steps_from_the_controllers_lines() -> None:
    log = [
        [10.5, "auto: 1 -> 2 connection(s), 37.1 MB/s: try more"],
        [11.0, "auto: 2 connection(s) kept: 66.1 MB/s vs 37.1 MB/s"],
        [11.0, "auto: 2 -> 4 connection(s), 66.1 MB/s: try more"],
        [12.25, "auto: 4 -> 3 connection(s), shed (throttled)"],
        [13.0, "auto: CPU-bound at 90.0 MB/s with 3"],
    ]
    counted = bench_auto.connection_steps(log, origin=10.0)
    assert counted == {
        "steps": [[0.0, 1], [0.5, 2], [1.0, 4], [2.25, 3]],
        "most": 4,
        "end": 3,
        "sheds": 1,
    }
    assert bench_auto.connection_steps([], origin=0.0)["end"] == 1


def test_rates_around_the_lift_come_from_the_progress_trace() -> None:
    mb = bench.MB
    run: dict[str, Any] = {
        "ok": True,
        "started_at": 100.0,
        "first_request_at": 100.1,
        "lift_at": 102.1,
        "ended_at": 103.0,
        "trace": [[100.6, 20 * mb], [102.0, 90 * mb], [102.2, 190 * mb], [102.9, 1000 * mb]],
    }
    bench_auto.annotate(run, 1000 * mb)
    # 140 MB at the lift (half-way between the reports at 90 and at 190 MB).
    assert run["before_lift_mbps"] == pytest.approx(140 / 2.0)
    assert run["after_lift_mbps"] == pytest.approx(860 / 0.9)
    assert run["left_at_lift"] == pytest.approx(0.86)
    assert bench_auto.bytes_at([[0.0, 0], [1.0, 10]], 5.0) == 10
    over = {**run, "lift_at": 104.0}
    figures = bench_auto.lift_figures(over, 1000 * mb)
    assert figures["after_lift_mbps"] is None and figures["left_at_lift"] is None
    assert figures["before_lift_mbps"] == pytest.approx(1000 / 2.9)
    assert bench_auto.lift_figures({**run, "ok": False}, mb)["before_lift_mbps"] is None


def test_the_auto_section_shows_claims_timeline_and_storm() -> None:
    summary = bench.summarize(_synthetic())
    text = bench_auto.render_section(
        summary["auto"], summary["cases"], lift_after=2.0, storm_every=3
    )
    rows = _table_rows(text, "| scenario |")
    assert rows["per-connection cap, to a file"][2:8] == [
        "40.0",
        "150",
        "N=8: 280",
        "305",
        "7.62x",
        "1.09x",
    ]
    assert rows["per-connection cap, to a file"][-1] == "yes"
    assert "- round 1: 1 (0.00 s) → 8 (0.50 s) → **cap lifted (2.00 s)** → 2 (3.00 s)" in text
    storm = _table_rows(text, "| case | right bytes ")
    assert storm["429 storm acr-blob auto"][1:] == ["1 of 1", "11.9", "11.9", "9", "8→5"]
    assert storm["429 storm acr-blob-file"][4:] == ["0", "-"]
    assert "every 3rd Range request" in text
    assert bench_auto.ordinal(2) == "2nd" and bench_auto.ordinal(11) == "11th"


def test_charts_are_svg_and_the_same_for_the_same_data(tmp_path: Path) -> None:
    cases = bench.summarize(_synthetic())["cases"]
    lifted = next(case for case in cases if case["name"] == "changing cap acr-blob auto")
    lifted["runs"][0].update(
        started_at=10.0,
        first_request_at=10.05,
        ended_at=14.0,
        trace=[[10.5, 50e6], [12.5, 300e6], [13.9, 1 << 30]],
    )
    paths = [tmp_path / "a.svg", tmp_path / "b.svg", tmp_path / "c.svg", tmp_path / "d.svg"]
    assert charts.throughput(cases, paths[0]) and charts.throughput(cases, paths[1])
    assert charts.auto_parts(cases, 2.0, paths[2]) and charts.auto_parts(cases, 2.0, paths[3])
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[2].read_bytes() == paths[3].read_bytes()
    for path in paths:
        assert ElementTree.parse(path).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    throughput = paths[0].read_text()
    assert "acr-blob max_concurrency=8" in throughput and "Per-connection cap" in throughput
    assert "cap lifted" in paths[2].read_text()
    # Nothing to draw: no file, and the caller leaves the chart out.
    assert not charts.auto_parts([], 2.0, tmp_path / "none.svg")
    assert not (tmp_path / "none.svg").exists()


def test_the_one_stream_rows_pin_one_connection_whatever_the_default() -> None:
    # The SDK defaults to "auto": its N=1 rows must still be one stream.
    from acr_blob import AsyncBlobClient, BlobClient
    from tools.bench import worker

    assert worker._one_stream(BlobClient) == {"max_concurrency": 1}
    assert worker._one_stream(AsyncBlobClient) == {"max_concurrency": 1}

    class OlderClient:
        def __init__(self, endpoint: str) -> None:
            self.endpoint = endpoint

    assert worker._one_stream(OlderClient) == {}


def test_the_lift_section_says_when_one_stream_was_fastest_after_the_lift() -> None:
    cases = bench.summarize(_synthetic())["cases"]
    lifted = [case for case in cases if case["scenario"] == bench_auto.CAP_LIFT]
    assert len(lifted) >= 3
    explained = "After the lift, one stream was the fastest here"
    for case in lifted:
        case["after_lift_mbps"] = 900.0 if case["max_concurrency"] is None else 500.0
    assert explained in "\n".join(bench_auto._lift_section(lifted, 2.0))
    for case in lifted:
        case["after_lift_mbps"] = 500.0 if case["max_concurrency"] is None else 900.0
    assert explained not in "\n".join(bench_auto._lift_section(lifted, 2.0))
