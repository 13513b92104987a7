"""The scenario catalog against this SDK (sync and async): CI's share of `make compare`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.compare import run as compare

OURS = ["acr-blob-sync", "acr-blob-async"]


@pytest.mark.usefixtures("registry_binary_path")
def test_every_scenario_passes_for_acr_blob(tmp_path: Path) -> None:
    results = compare.run(OURS, None)
    verdicts = {key: v["result"] for key, v in results["verdicts"].items()}
    scenarios = json.loads(compare.CATALOG.read_text())["scenarios"]
    assert len(verdicts) == 2 * len(scenarios) >= 24
    failed = {k: results["verdicts"][k]["observation"] for k, v in verdicts.items() if v != "pass"}
    assert failed == {}
    compare.write_table(results, tmp_path)
    table = (tmp_path / "parity.md").read_text()
    assert table.count("| pass:") == 2 * len(scenarios)
    assert "| n/a" not in table
