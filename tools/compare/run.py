"""`make compare`: run the scenario catalog against every client and write the parity table.

Each client runs in its own process through a runner (tools/compare/runners/, js/runner.mjs)
that reads a request as JSON on stdin and answers, on stdout, only what it observed:
    {"client": NAME, "unsupported": null | REASON, "downloads": [{"ok", "error", "elapsed"}]}
A blob's request gives its `size` too, for clients that fetch by descriptor (containerd's).
A pull scenario's request also names `tag`, `pull` ("image" or "files") and `platform`, and its
one "download" is the pull into `output_dir/pull-0`. On the ACR deployment a request carries
`aad_token` (an AAD token the registry's exchange accepts) besides `credentials`; a parallel
scenario's carries `max_concurrency`.
Each scenario runs on Debian's docker-registry or on the ACR deployment, see
tools/compare/scenarios.py: the clients that take only an AAD credential (the Azure SDKs) run
every scenario on the ACR deployment. A `restart` scenario runs the runner twice into one
folder, the first killed (SIGKILL, its whole process group) once `kill_after_bytes` of the
blob have been relayed; a `processes` scenario runs that many runners at once into one folder.
The verdicts come from tools/compare/scenarios.py. Output: docs/parity.md and docs/parity.json.

    python -m tools.compare.run [--clients acr-blob-sync,oras-py] [--scenarios plain,empty]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from acr_blob import parse_digest
from tools.compare.scenarios import ACR, Servers, Setup, error_kind, judge, serve, variant_of
from tools.testbed import TestbedUnavailable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CATALOG = HERE / "catalog.json"
PEERS_PYTHON = ROOT / ".compare" / "venv" / "bin" / "python"
RUNNERS = HERE / "runners"
CONTAINERD_RUNNER = ROOT / ".compare" / "go" / "containerd-runner"  # tools/compare/go/build.sh
RUNNER_TIMEOUT = 300
_POLL_SECONDS = 0.01
# How long the bytes relayed must stay unchanged for a killed runner's answers to be over.
_SETTLE_SECONDS = 0.3


@dataclass(frozen=True)
class Client:
    name: str
    command: list[str]
    needs: Path | str | None = None  # a file or a command that must exist
    wants_tag: bool = False  # skopeo copies images: give it a tag whose one layer is the blob
    # Takes only an AAD credential (or none): every scenario runs on the ACR deployment.
    aad_only: bool = False
    # Refuses to authenticate over plain http: scenarios with credentials run on the ACR
    # deployment (https), whose /oauth2/token takes them.
    credentials_over_https: bool = False

    def variant(self, scenario: dict[str, Any]) -> str:
        if self.credentials_over_https and scenario.get("credentials"):
            return ACR
        return variant_of(scenario, self.aad_only)


CLIENTS = [
    Client("acr-blob-sync", [sys.executable, str(RUNNERS / "acr_blob_runner.py")]),
    Client("acr-blob-async", [sys.executable, str(RUNNERS / "acr_blob_runner.py"), "--async"]),
    # The same, with an AAD credential on the ACR deployment for every row: side by side with
    # the Azure SDKs on the same server.
    Client(
        "acr-blob-sync (ACR)", [sys.executable, str(RUNNERS / "acr_blob_runner.py")], aad_only=True
    ),
    Client(
        "acr-blob-async (ACR)",
        [sys.executable, str(RUNNERS / "acr_blob_runner.py"), "--async"],
        aad_only=True,
    ),
    Client(
        "azure-containerregistry",
        [str(PEERS_PYTHON), str(RUNNERS / "azure_containerregistry.py")],
        PEERS_PYTHON,
        aad_only=True,
    ),
    Client("oras-py", [str(PEERS_PYTHON), str(RUNNERS / "oras_py.py")], PEERS_PYTHON),
    Client(
        "python-dxf",
        [str(PEERS_PYTHON), str(RUNNERS / "python_dxf.py")],
        PEERS_PYTHON,
        credentials_over_https=True,
    ),
    Client(
        "@azure/container-registry",
        ["node", str(HERE / "js" / "runner.mjs")],
        HERE / "js" / "node_modules",
        aad_only=True,
    ),
    Client("skopeo", [sys.executable, str(RUNNERS / "skopeo.py")], "skopeo", wants_tag=True),
    Client("containerd", [str(CONTAINERD_RUNNER)], CONTAINERD_RUNNER),
    Client("containerd-ingest", [str(CONTAINERD_RUNNER), "-ingest"], CONTAINERD_RUNNER),
]


def available(client: Client) -> str | None:
    """Why the client cannot run here, or None."""
    if client.needs is None:
        return None
    if isinstance(client.needs, Path):
        return (
            None if client.needs.exists() else f"not installed ({client.needs.name}): make compare"
        )
    return None if shutil.which(client.needs) else f"{client.needs} not installed: make compare"


@dataclass
class _Running:
    """A runner process, its request written, its output going to files."""

    client: Client
    process: subprocess.Popen[bytes]
    stdout: IO[bytes]
    stderr: IO[bytes]


def _start(client: Client, request: dict[str, Any]) -> _Running:
    # Files, not pipes: a runner killed or left running never blocks on a full pipe. _finish
    # closes them.
    stdout = tempfile.TemporaryFile()  # noqa: SIM115
    stderr = tempfile.TemporaryFile()  # noqa: SIM115
    process = subprocess.Popen(
        client.command,
        stdin=subprocess.PIPE,
        stdout=stdout,
        stderr=stderr,
        cwd=ROOT,
        # Its own process group, so that a kill reaches what the runner started (node's child,
        # skopeo).
        start_new_session=True,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(request).encode())
    process.stdin.close()
    return _Running(client, process, stdout, stderr)


def _kill(running: _Running) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(running.process.pid, signal.SIGKILL)


def _finish(running: _Running) -> dict[str, Any]:
    try:
        running.process.wait(timeout=RUNNER_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill(running)
        running.process.wait()
    with running.stdout, running.stderr:
        running.stdout.seek(0)
        running.stderr.seek(0)
        out = running.stdout.read().decode(errors="replace")
        err = running.stderr.read().decode(errors="replace")
    if running.process.returncode != 0:
        return {
            "client": running.client.name,
            "unsupported": None,
            "downloads": [],
            "runner_error": err[-2000:] or f"exit status {running.process.returncode}",
        }
    observed: dict[str, Any] = json.loads(out)
    return observed


def run_client(client: Client, request: dict[str, Any]) -> dict[str, Any]:
    return _finish(_start(client, request))


def _run_killed(
    client: Client, request: dict[str, Any], setup: Setup, after: int
) -> dict[str, Any]:
    """A first run, killed with SIGKILL once `after` bytes of the blob have been relayed."""
    running = _start(client, request)
    deadline = time.monotonic() + float(request["timeout"])
    while (
        running.process.poll() is None
        and setup.body_bytes() < after
        and time.monotonic() < deadline
    ):
        time.sleep(_POLL_SECONDS)
    killed = running.process.poll() is None and setup.body_bytes() >= after
    if killed:
        _kill(running)
    observed = _finish(running)
    _settle(setup)
    why: Any = "killed"
    if not killed:
        failed = [d for d in observed.get("downloads", []) if not d["ok"]]
        why = (
            observed.get("unsupported")
            or (failed[0]["error"] if failed else None)
            or ("it finished" if observed.get("downloads") else observed.get("runner_error"))
        )
    return {
        "killed": killed,
        "bytes": setup.body_bytes(),
        "why": error_kind(str(why)),
        "raw": observed,
    }


def _settle(setup: Setup) -> None:
    """Wait until the proxy has stopped relaying to the killed runner's dead connections, so
    that those bytes do not count as the second run's."""
    before = setup.body_bytes()
    while True:
        time.sleep(_SETTLE_SECONDS)
        now = setup.body_bytes()
        if now == before:
            return
        before = now


def execute(
    client: Client, scenario: dict[str, Any], setup: Setup, output_dir: Path
) -> dict[str, Any]:
    """Run `client` on one scenario as the scenario asks: once, twice or side by side."""
    request = setup.request(scenario, output_dir)
    restart = scenario.get("restart")
    if restart:
        first = _run_killed(client, request, setup, int(restart["kill_after_bytes"]))
        if first["raw"].get("unsupported"):
            return dict(first["raw"])
        setup.between_runs()
        observed = run_client(client, request)
        observed["restart"] = {
            "first_run_killed": first["killed"],
            "first_run_why": first["why"],
            "first_run_bytes": first["bytes"],
            "second_run_bytes": setup.body_bytes(),
            "size": len(setup.data),
        }
        return observed
    processes = int(scenario.get("processes", 1))
    if processes > 1:
        started = [_start(client, request) for _ in range(processes)]
        results = [_finish(running) for running in started]
        unsupported = next((r for r in results if r.get("unsupported")), None)
        if unsupported is not None:
            return unsupported
        observed = dict(results[0])
        observed["processes"] = results
        observed["fetched_bytes"] = setup.body_bytes()
        return observed
    return run_client(client, request)


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
            missing = available(client)
            versions: set[str] = set()
            for scenario in scenarios:
                index += 1
                key = f"{scenario['name']}|{client.name}"
                if missing:
                    results["verdicts"][key] = {"result": "n/a", "observation": missing}
                    continue
                output_dir = Path(scratch) / f"run-{index}"
                output_dir.mkdir()
                variant = client.variant(scenario)
                try:
                    with serve(scenario, servers, index, variant) as setup:
                        if client.wants_tag and not scenario.get("pull"):
                            _tag_for_image_clients(setup)
                            setup.clear_records()
                        observed = execute(client, scenario, setup, output_dir)
                        verdict = judge(scenario, setup, observed, output_dir)
                except TestbedUnavailable as error:
                    # Only when the testbed is not installed (Azurite: make azurite).
                    results["verdicts"][key] = {
                        "result": "n/a",
                        "observation": f"the {variant} deployment is not installed: {error}",
                    }
                    continue
                versions.add(str(observed.get("client", client.name)))
                results["verdicts"][key] = {
                    "result": verdict.result,
                    "observation": verdict.observation,
                    "deployment": variant,
                    "raw": observed,
                }
                print(
                    f"{client.name:26s} {scenario['name']:28s} {variant:8s} {verdict.result:4s} "
                    f"{verdict.observation}",
                    file=sys.stderr,
                )
            results["clients"][client.name] = sorted(versions)
    return results


def _tag_for_image_clients(setup: Setup) -> None:
    """Push a one-layer image whose layer is the scenario's blob (for skopeo)."""
    try:
        from tools.compare.runners.manifest import push_single_layer_image
    except ImportError:
        return
    try:
        parse_digest(setup.digest)
    except ValueError:
        return  # no manifest can list a malformed digest
    try:
        if setup.acr is not None:
            push_single_layer_image(
                setup.registry,
                setup.repository,
                "compare",
                setup.digest,
                len(setup.data),
                auth=setup.acr.push_auth(setup.repository),
                verify=setup.acr.verify,
            )
        elif setup.deployment is not None:
            push_single_layer_image(
                setup.deployment, setup.repository, "compare", setup.digest, len(setup.data)
            )
        else:
            return
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
        "`tools/compare/catalog.json`: each client runs in its own process on loopback, "
        "against Debian's `docker-registry` (behind the fault proxy, the recording storage "
        "proxy or the token server where a scenario needs them) or against the ACR "
        "deployment (`tools/testbed/acr.py`: https, ACR's challenge and AAD-token exchange, "
        "blobs in Azurite behind 307s with real SAS tokens, faults between storage and "
        "Azurite), with the same fault and the same judge. The rows whose title ends in "
        "(ACR) run on the ACR deployment for every client; the two Azure SDKs, which take "
        "only an AAD credential, run every row there with a fake AAD credential, and so do "
        "the acr-blob columns marked (ACR); python-dxf, which refuses to authenticate over "
        "plain http, runs the rows with credentials there. A cell is pass / fail / n/a with "
        "what was observed; n/a means the client has no way to express the scenario. Row "
        "by row, what each client got wrong: [comparison.md](comparison.md#row-by-row). The "
        "raw results are in `parity.json`.",
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
