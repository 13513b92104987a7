"""`make compare`: run the scenario catalog against every client and write the parity table.

Each client runs in its own process through a runner (tools/compare/runners/, js/runner.mjs)
that reads a request as JSON on stdin and answers, on stdout, only what it observed:
    {"client": NAME, "unsupported": null | REASON, "downloads": [{"ok", "error", "elapsed"}]}
A blob's request gives its `size` too, for clients that fetch by descriptor (containerd's).
A pull scenario's request also names `tag`, `pull` ("image" or "files") and `platform`, and its
one "download" is the pull into `output_dir/pull-0`.
The verdicts come from tools/compare/scenarios.py. Output: docs/parity.md and docs/parity.json.

    python -m tools.compare.run [--clients acr-blob-sync,oras-py] [--scenarios plain,empty]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acr_blob import parse_digest
from tools.compare.scenarios import Servers, judge, serve

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CATALOG = HERE / "catalog.json"
PEERS_PYTHON = ROOT / ".compare" / "venv" / "bin" / "python"
RUNNERS = HERE / "runners"
CONTAINERD_RUNNER = ROOT / ".compare" / "go" / "containerd-runner"  # tools/compare/go/build.sh


@dataclass(frozen=True)
class Client:
    name: str
    command: list[str]
    needs: Path | str | None = None  # a file or a command that must exist
    wants_tag: bool = False  # skopeo copies images: give it a tag whose one layer is the blob
    wants_tls: bool = False  # refuses plain http: an https registry wherever a scenario allows


CLIENTS = [
    Client("acr-blob-sync", [sys.executable, str(RUNNERS / "acr_blob_runner.py")]),
    Client("acr-blob-async", [sys.executable, str(RUNNERS / "acr_blob_runner.py"), "--async"]),
    Client(
        "azure-containerregistry",
        [str(PEERS_PYTHON), str(RUNNERS / "azure_containerregistry.py")],
        PEERS_PYTHON,
    ),
    Client("oras-py", [str(PEERS_PYTHON), str(RUNNERS / "oras_py.py")], PEERS_PYTHON),
    Client("python-dxf", [str(PEERS_PYTHON), str(RUNNERS / "python_dxf.py")], PEERS_PYTHON),
    Client(
        "@azure/container-registry",
        ["node", str(HERE / "js" / "runner.mjs")],
        HERE / "js" / "node_modules",
        wants_tls=True,
    ),
    Client("skopeo", [sys.executable, str(RUNNERS / "skopeo.py")], "skopeo", wants_tag=True),
    Client("containerd", [str(CONTAINERD_RUNNER)], CONTAINERD_RUNNER),
    Client("containerd-ingest", [str(CONTAINERD_RUNNER), "-ingest"], CONTAINERD_RUNNER),
]


def _available(client: Client) -> str | None:
    """Why the client cannot run here, or None."""
    if client.needs is None:
        return None
    if isinstance(client.needs, Path):
        return (
            None if client.needs.exists() else f"not installed ({client.needs.name}): make compare"
        )
    return None if shutil.which(client.needs) else f"{client.needs} not installed: make compare"


def run_client(client: Client, request: dict[str, Any]) -> dict[str, Any]:
    completed = subprocess.run(
        client.command,
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    if completed.returncode != 0:
        return {
            "client": client.name,
            "unsupported": None,
            "downloads": [],
            "runner_error": completed.stderr[-2000:],
        }
    observed: dict[str, Any] = json.loads(completed.stdout)
    return observed


def run(client_names: list[str] | None, scenario_names: list[str] | None) -> dict[str, Any]:
    catalog = json.loads(CATALOG.read_text())
    scenarios = [
        s for s in catalog["scenarios"] if not scenario_names or s["name"] in scenario_names
    ]
    clients = [c for c in CLIENTS if not client_names or c.name in client_names]
    results: dict[str, Any] = {"scenarios": scenarios, "clients": {}, "verdicts": {}}
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as scratch:
        servers = Servers(stack)
        index = 0
        for client in clients:
            missing = _available(client)
            versions: set[str] = set()
            for scenario in scenarios:
                index += 1
                key = f"{scenario['name']}|{client.name}"
                if missing:
                    results["verdicts"][key] = {"result": "n/a", "observation": missing}
                    continue
                output_dir = Path(scratch) / f"run-{index}"
                output_dir.mkdir()
                with serve(scenario, servers, index, tls=client.wants_tls) as setup:
                    if client.wants_tag and not scenario.get("pull"):
                        _tag_for_image_clients(setup)
                    observed = run_client(client, setup.request(scenario, output_dir))
                    verdict = judge(scenario, setup, observed, output_dir)
                versions.add(str(observed.get("client", client.name)))
                results["verdicts"][key] = {
                    "result": verdict.result,
                    "observation": verdict.observation,
                    "raw": observed,
                }
                print(
                    f"{client.name:26s} {scenario['name']:28s} {verdict.result:4s} "
                    f"{verdict.observation}",
                    file=sys.stderr,
                )
            results["clients"][client.name] = sorted(versions)
    return results


def _tag_for_image_clients(setup: Any) -> None:
    """Push a one-layer image whose layer is the scenario's blob (for skopeo)."""
    try:
        from tools.compare.runners.manifest import push_single_layer_image
    except ImportError:
        return
    deployment = setup.deployment
    try:
        parse_digest(setup.digest)
    except ValueError:
        return  # no manifest can list a malformed digest
    if deployment is None:
        return
    try:
        push_single_layer_image(
            deployment, setup.repository, "compare", setup.digest, len(setup.data)
        )
    except Exception as error:
        print(f"could not tag {setup.repository}: {error!r}", file=sys.stderr)
        return
    setup.notes["tag"] = "compare"


def write_table(results: dict[str, Any], docs: Path) -> None:
    clients = list(results["clients"])
    symbol = {"pass": "pass", "fail": "**fail**", "n/a": "n/a"}
    lines = [
        "# Parity: the same scenarios against every registry client",
        "",
        "Generated by `make compare` (`python -m tools.compare.run`) from "
        "`tools/compare/catalog.json`: each client runs in its own process against Debian's "
        "`docker-registry` on loopback (behind the fault proxy, the recording storage proxy or "
        "the token server where a scenario needs them). A cell is pass / fail / n/a with what "
        "was observed; n/a means the client has no way to express the scenario. The raw "
        "results are in `parity.json`.",
        "",
        "Clients: "
        + "; ".join(
            f"{name} ({', '.join(results['clients'][name]) or 'not run'})" for name in clients
        )
        + ".",
        "",
        "| scenario | what a correct client does | " + " | ".join(clients) + " |",
        "| --- | --- | " + " | ".join("---" for _ in clients) + " |",
    ]
    for scenario in results["scenarios"]:
        cells = []
        for name in clients:
            verdict = results["verdicts"][f"{scenario['name']}|{name}"]
            cells.append(f"{symbol[verdict['result']]}: {verdict['observation']}")
        lines.append(f"| {scenario['title']} | {scenario['correct']} | " + " | ".join(cells) + " |")
    docs.mkdir(exist_ok=True)
    (docs / "parity.md").write_text("\n".join(lines) + "\n")
    (docs / "parity.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", help="comma-separated client names (default: all)")
    parser.add_argument("--scenarios", help="comma-separated scenario names (default: all)")
    parser.add_argument("--docs", default=str(ROOT / "docs"), help="where parity.md goes")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    results = run(
        args.clients.split(",") if args.clients else None,
        args.scenarios.split(",") if args.scenarios else None,
    )
    if not args.no_write:
        write_table(results, Path(args.docs))
    ours = [v for k, v in results["verdicts"].items() if k.split("|")[1].startswith("acr-blob")]
    return 0 if all(v["result"] == "pass" for v in ours) else 1


if __name__ == "__main__":
    sys.exit(main())
