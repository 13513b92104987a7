"""`python -m tools.bench` at CI size: a 1 MiB blob, one round, the cases that need no peers."""

from __future__ import annotations

import argparse
import re
import time

import pytest

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


def _table_rows(output: str) -> dict[str, list[str]]:
    """The printed table's rows by case name, cells stripped (header and rule left out)."""
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        if not line.startswith("| ") or line.startswith(("| case ", "| ---")):
            continue
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
        "throttled acr-blob-stream",
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
    assert "speedup vs N=1" in rows["throttled acr-blob-stream max_concurrency=4 (2 MiB)"][-1]


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
