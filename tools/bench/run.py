"""The benchmark's orchestrator: registry, blobs, throttling proxy, rounds, table, files.

Each case runs in its own process (tools/bench/worker.py in a fresh interpreter, or curl),
so imports, caches and peak RSS are the case's own. Rounds are interleaved: round 1 runs every
case once, then round 2, and so on, so that drift on a shared machine spreads over all cases.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import importlib.util
import inspect
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from tools.bench import auto
from tools.bench.auto import AUTO, CAP, CAP_LIFT, LOOPBACK, STORM
from tools.faultproxy import Fault, FaultProxy, Rule
from tools.testbed import Deployment, open_filesystem_registry

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORKER = HERE / "worker.py"
PEERS_PYTHON = ROOT / ".compare" / "venv" / "bin" / "python"
DOCS = ROOT / "docs"

MB = 1_000_000
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
REPOSITORY = "bench/blob"
THROTTLED_REPOSITORY = "bench/throttled"
DRIP_SIZE = 64 * KIB
BASELINE = "requests+hashlib"
TLS_BASELINE = "TLS requests+hashlib"
CACHE_BASELINE = "disk copy (shutil.copyfile)"
CACHE_HIT = "acr-blob cache hit"
LIMIT_CASES = ("raw-curl", "hash-limit")
PEERS_MISSING = "not installed (tools/compare/install-peers.sh)"
NO_CONCURRENCY = "not available yet (BlobClient.download_blob_to_file has no max_concurrency)"
NO_AUTO = 'not available yet (this SDK has no max_concurrency="auto")'
# The 429 storm answers every STORM_EVERY-th Range request (counted afresh each run) with this.
STORM_EVERY = 3
STORM_RETRY_AFTER = "1"
BLOB_PATHS = r"/blobs/"
CHARTS = (
    ("benchmarks-throughput.svg", "MB/s per client against the limits"),
    ("benchmarks-auto-parts.svg", "auto's connection count over time on the changing cap"),
)
# Environment variables that could send a client's loopback requests through a proxy.
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@dataclass(frozen=True)
class Case:
    """One row: `kind` is a worker kind (worker.PREPARERS) or `curl`; `runner` says which
    interpreter runs it: `project` (this one), `peers` (.compare/venv), `requests` (this one if
    it has requests, else the peers'), or `curl` (no Python at all)."""

    name: str
    kind: str
    runner: str
    scenario: str = LOOPBACK
    tls: bool = False  # from a second registry that serves https with a self-signed certificate
    # From a blob cache that holds the blob (filled once, before the rounds): no network.
    cached: bool = False
    max_concurrency: int | Literal["auto"] | None = None
    module: str | None = None  # what must import in the peers' interpreter

    @property
    def throttled(self) -> bool:
        """Through one of the capping proxies, with the throttled blob."""
        return self.scenario != LOOPBACK

    @property
    def repository(self) -> str:
        return THROTTLED_REPOSITORY if self.throttled else REPOSITORY


def _fixed_and_auto(prefix: str, scenario: str, counts: Sequence[int]) -> list[Case]:
    """acr-blob to a file with one connection, each of `counts`, then "auto"."""
    cases = [Case(f"{prefix}acr-blob-file", "acr-blob-file", "project", scenario=scenario)]
    cases += [
        Case(
            f"{prefix}acr-blob max_concurrency={n}",
            "acr-blob-file",
            "project",
            scenario=scenario,
            max_concurrency=n,
        )
        for n in counts
    ]
    cases.append(
        Case(
            f"{prefix}acr-blob auto",
            "acr-blob-file",
            "project",
            scenario=scenario,
            max_concurrency=AUTO,
        )
    )
    return cases


CASES = [
    Case("raw-curl", "curl", "curl"),
    Case("hash-limit", "hash-limit", "project"),
    Case(BASELINE, "requests", "requests", module="requests"),
    Case("requests+hashlib to file", "requests-file", "requests", module="requests"),
    Case("http.client+hashlib (bare)", "socket", "project"),
    Case("http.client+hashlib to file (bare)", "socket-file", "project"),
    Case("acr-blob-stream", "acr-blob-stream", "project"),
    Case("acr-blob-stream max_concurrency=4", "acr-blob-stream", "project", max_concurrency=4),
    Case("acr-blob-stream auto", "acr-blob-stream", "project", max_concurrency=AUTO),
    Case("acr-blob-file", "acr-blob-file", "project"),
    Case("acr-blob-async", "acr-blob-async", "project"),
    Case("acr-blob-async-file", "acr-blob-async-file", "project"),
    Case("acr-blob max_concurrency=2", "acr-blob-file", "project", max_concurrency=2),
    Case("acr-blob max_concurrency=4", "acr-blob-file", "project", max_concurrency=4),
    Case("acr-blob auto", "acr-blob-file", "project", max_concurrency=AUTO),
    Case(
        "azure-containerregistry",
        "azure-containerregistry",
        "peers",
        module="azure.containerregistry",
    ),
    Case("oras-py", "oras-py", "peers", module="oras.provider"),
    Case("python-dxf", "python-dxf", "peers", module="dxf"),
    Case("TLS raw-curl", "curl", "curl", tls=True),
    Case(TLS_BASELINE, "requests", "requests", module="requests", tls=True),
    Case("TLS acr-blob-stream", "acr-blob-stream", "project", tls=True),
    Case(
        "TLS acr-blob-stream max_concurrency=4",
        "acr-blob-stream",
        "project",
        tls=True,
        max_concurrency=4,
    ),
    Case("TLS acr-blob-stream auto", "acr-blob-stream", "project", tls=True, max_concurrency=AUTO),
    Case("TLS acr-blob-file", "acr-blob-file", "project", tls=True),
    Case("TLS acr-blob max_concurrency=4", "acr-blob-file", "project", tls=True, max_concurrency=4),
    Case("TLS acr-blob auto", "acr-blob-file", "project", tls=True, max_concurrency=AUTO),
    Case("TLS acr-blob-async", "acr-blob-async", "project", tls=True),
    Case("TLS acr-blob-async-file", "acr-blob-async-file", "project", tls=True),
    Case(CACHE_BASELINE, "copy-entry", "project", cached=True),
    Case(CACHE_HIT, "acr-blob-cache-hit", "project", cached=True),
    Case("throttled raw-curl", "curl", "curl", scenario=CAP),
    *_fixed_and_auto("throttled ", CAP, (2, 4, 8)),
    # Iterating under the cap; its N=1 would only repeat the file's (one capped connection).
    Case(
        "throttled acr-blob-stream max_concurrency=4",
        "acr-blob-stream",
        "project",
        scenario=CAP,
        max_concurrency=4,
    ),
    *_fixed_and_auto("changing cap ", CAP_LIFT, (2, 4, 8)),
    *_fixed_and_auto("429 storm ", STORM, (4,)),
]
CASE_NAMES = [case.name for case in CASES]
THROTTLED_N1 = "throttled acr-blob-file"
THROTTLED_N4 = "throttled acr-blob max_concurrency=4"


# --- options --------------------------------------------------------------------------------

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)\s*", re.IGNORECASE)
_UNITS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}


def parse_size(text: str) -> int:
    """`1073741824`, `64MiB`, `1GiB`, `1G` (binary) or `100MB` (decimal) -> bytes."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64MiB, 1GiB, 1000000)")
    number, prefix, suffix = match.groups()
    base = 1000 if suffix.upper() == "B" and prefix else 1024
    size = int(float(number) * base ** _UNITS[prefix.upper()])
    if size <= 0:
        raise argparse.ArgumentTypeError(f"the size must be positive, got {text!r}")
    return size


def format_size(size: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description="Blob download throughput of acr-blob, its peers and the limits, against a "
        "local registry; writes docs/benchmarks.md and docs/benchmarks.json.",
        epilog="cases: " + ", ".join(CASE_NAMES),
    )
    parser.add_argument("--size", type=parse_size, default=GIB, help="blob size (default 1GiB)")
    parser.add_argument(
        "--rounds", type=_positive_int, default=5, help="runs per case, interleaved (default 5)"
    )
    parser.add_argument(
        "--cases", help="comma-separated case names (default: all); see the list below"
    )
    parser.add_argument(
        "--throttle",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the throttled cases: per-connection cap, changing cap, 429 storm "
        "(default: on)",
    )
    parser.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the TLS cases, against an https registry (default: on)",
    )
    parser.add_argument(
        "--throttle-size",
        type=parse_size,
        default=GIB,
        help="blob size for the throttled cases (default 1GiB)",
    )
    parser.add_argument(
        "--throttle-rate",
        type=_positive_float,
        default=50.0,
        help="target cap per connection in MB/s (default 50): the proxy sends 64 KiB, then "
        "waits 64 KiB / rate",
    )
    parser.add_argument(
        "--lift-after",
        type=_positive_float,
        default=2.0,
        help="changing cap: seconds after the run's first blob request at which the proxy "
        "lifts the cap, on open connections too (default 2: every fixed N is still mid-way "
        "through 1 GiB then)",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print the table only; leave docs/ alone"
    )
    parser.add_argument(
        "--output-dir", type=Path, default=DOCS, help="where benchmarks.md/.json go (docs/)"
    )
    return parser


def select_cases(parser: argparse.ArgumentParser, options: argparse.Namespace) -> list[Case]:
    if options.cases is None:
        chosen = list(CASES)
    else:
        names = [name.strip() for name in options.cases.split(",") if name.strip()]
        unknown = [name for name in names if name not in CASE_NAMES]
        if unknown or not names:
            parser.error(f"unknown case(s) {unknown}; choose from: {', '.join(CASE_NAMES)}")
        chosen = [case for case in CASES if case.name in names]
    if not options.throttle:
        chosen = [case for case in chosen if not case.throttled]
    if not options.tls:
        chosen = [case for case in chosen if not case.tls]
    return chosen


# --- which cases can run here ---------------------------------------------------------------


def _peer_modules(modules: Sequence[str]) -> dict[str, bool]:
    """Which of these modules the peers' interpreter can find (one quick subprocess)."""
    if not modules or not PEERS_PYTHON.exists():
        return dict.fromkeys(modules, False)
    probe = (
        "import importlib.util, json, sys\n"
        "found = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        found[name] = importlib.util.find_spec(name) is not None\n"
        "    except Exception:\n"
        "        found[name] = False\n"
        "print(json.dumps(found))\n"
    )
    try:
        completed = subprocess.run(
            [str(PEERS_PYTHON), "-c", probe, *modules],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        found: dict[str, bool] = json.loads(completed.stdout)
        return found
    except (OSError, subprocess.SubprocessError, ValueError):
        return dict.fromkeys(modules, False)


def has_max_concurrency() -> bool:
    from acr_blob import BlobClient

    return "max_concurrency" in inspect.signature(BlobClient.download_blob_to_file).parameters


def has_auto_concurrency() -> bool:
    return importlib.util.find_spec("acr_blob._adaptive") is not None


@dataclass(frozen=True)
class Plan:
    """How each chosen case runs: its command prefix, or why it cannot run here."""

    commands: dict[str, list[str]]
    unavailable: dict[str, str]


def plan(cases: Sequence[Case]) -> Plan:
    peer_modules = [case.module for case in cases if case.runner == "peers" and case.module]
    project_requests = importlib.util.find_spec("requests") is not None
    if not project_requests:
        peer_modules.append("requests")
    found = _peer_modules(peer_modules)
    concurrency = has_max_concurrency()
    auto = concurrency and has_auto_concurrency()
    commands: dict[str, list[str]] = {}
    unavailable: dict[str, str] = {}
    project = [sys.executable, "-P", str(WORKER)]
    peers = [str(PEERS_PYTHON), "-P", str(WORKER)]
    for case in cases:
        if case.max_concurrency is not None and not concurrency:
            unavailable[case.name] = NO_CONCURRENCY
        elif case.max_concurrency == AUTO and not auto:
            unavailable[case.name] = NO_AUTO
        elif case.runner == "curl":
            if shutil.which("curl") is None:
                unavailable[case.name] = "skipped: curl not found"
            else:
                commands[case.name] = ["curl"]
        elif case.runner == "project":
            commands[case.name] = project
        elif case.runner == "requests":
            if project_requests:
                commands[case.name] = project
            elif found.get("requests"):
                commands[case.name] = peers
            else:
                unavailable[case.name] = (
                    "requests is in neither venv: pip install requests, or "
                    "tools/compare/install-peers.sh"
                )
        elif case.module is not None and found.get(case.module):
            commands[case.name] = peers
        else:
            unavailable[case.name] = PEERS_MISSING
    return Plan(commands, unavailable)


# --- running one case once ------------------------------------------------------------------


def worker_env() -> dict[str, str]:
    """The environment minus proxy settings: every request stays on loopback."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_curl(
    url: str, size: int, timeout: float, env: dict[str, str], ca_cert: Path | None = None
) -> dict[str, Any]:
    argv = ["curl", "-s", "-S", "--fail", "--noproxy", "*", "-o", "/dev/null"]
    if ca_cert is not None:
        argv += ["--cacert", str(ca_cert)]
    argv += ["-w", "%{http_code} %{size_download}", url]
    start = time.perf_counter()
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"curl timed out after {timeout:.0f} s"}
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {"ok": False, "error": None, "kind": "curl"}
    result["checked"] = "bytes counted, not hashed (body to /dev/null)"
    result["versions"] = {"curl": _curl_version()}
    if completed.returncode != 0:
        result["error"] = f"curl exited {completed.returncode}: {_tail(completed.stderr)}"
        return result
    try:
        status, received = completed.stdout.split()
        result["bytes"] = int(float(received))
    except ValueError:
        result["error"] = f"unexpected curl output {completed.stdout!r}"
        return result
    result["seconds"] = seconds
    if status != "200" or result["bytes"] != size:
        result["error"] = f"curl got HTTP {status} and {result['bytes']} bytes, expected {size}"
        return result
    result["ok"] = True
    return result


def run_worker(
    command: list[str],
    request: dict[str, Any],
    workdir: Path,
    timeout: float,
    env: dict[str, str],
) -> dict[str, Any]:
    output_dir = Path(tempfile.mkdtemp(prefix="case-", dir=workdir))
    request = {**request, "output_dir": str(output_dir)}
    try:
        completed = subprocess.run(
            [*command, json.dumps(request)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=output_dir,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s"}
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
    lines = completed.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        return {
            "ok": False,
            "error": f"the worker exited {completed.returncode} without a result: "
            f"{_tail(completed.stderr)}",
        }
    if not result.get("ok") and completed.stderr.strip():
        result["stderr_tail"] = _tail(completed.stderr)
    return result


@dataclass
class Blob:
    repository: str
    digest: str
    size: int


def run_once(
    case: Case,
    command: list[str],
    url: str,
    blob: Blob,
    workdir: Path,
    env: dict[str, str],
    ca_cert: Path | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    # Generous: 5 MB/s would be far below any client here.
    timeout = 60.0 + blob.size / (5 * MB)
    if case.runner == "curl":
        result = run_curl(
            f"{url}/v2/{blob.repository}/blobs/{blob.digest}", blob.size, timeout, env, ca_cert
        )
    else:
        request = {
            "kind": case.kind,
            "url": url,
            "repository": blob.repository,
            "digest": blob.digest,
            "size": blob.size,
            "options": {
                "max_concurrency": case.max_concurrency,
                "cache_dir": None if cache_dir is None else str(cache_dir),
                # The rate after the lift is read off the progress trace.
                "trace": case.scenario == CAP_LIFT,
            },
            "ca_cert": None if ca_cert is None else str(ca_cert),
        }
        result = run_worker(command, request, workdir, timeout, env)
    if result.get("ok"):
        result["mbps"] = blob.size / result["seconds"] / MB
        if "rss_end_kib" in result:
            result["rss_growth_mib"] = (
                result["rss_end_kib"] - result["rss_after_imports_kib"]
            ) / 1024
    # Written-back pages of one case's output file must not slow down the next case.
    os.sync()
    return result


# --- the whole run --------------------------------------------------------------------------


@dataclass
class CaseResult:
    case: Case
    size: int
    unavailable: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok_runs(self) -> list[dict[str, Any]]:
        return [run for run in self.runs if run.get("ok")]

    @property
    def median_mbps(self) -> float | None:
        speeds = [run["mbps"] for run in self.ok_runs]
        return statistics.median(speeds) if speeds else None

    @property
    def rss_growth_mib(self) -> float | None:
        growths = [run["rss_growth_mib"] for run in self.ok_runs if "rss_growth_mib" in run]
        return max(growths) if growths else None

    def last(self, key: str) -> Any:
        for run in reversed(self.runs):
            if key in run:
                return run[key]
        return None


def warm_up(registry: Deployment, blobs: Sequence[Blob]) -> None:
    """Read each blob once, untimed, so that every case finds it in the page cache."""
    with httpx.Client(
        trust_env=False, timeout=httpx.Timeout(30.0, read=300.0), verify=registry.verify
    ) as client:
        for blob in blobs:
            url = registry.blob_url(blob.repository, blob.digest)
            with client.stream("GET", url) as response:
                response.raise_for_status()
                for _ in response.iter_raw():
                    pass


def fill_cache(registry: Deployment, blob: Blob, workdir: Path) -> Path:
    """A blob cache in ``workdir`` that holds ``blob``, as a first download left it (so its
    entry is also in the page cache, as a cache hit right after that download finds it)."""
    from acr_blob import BlobClient

    cache_dir = workdir / "cache"
    target = workdir / "cache-fill"
    with BlobClient(registry.url, verify=registry.verify, cache_dir=cache_dir) as client:
        client.download_blob_to_file(blob.repository, blob.digest, target)
    target.unlink()
    return cache_dir


def push_blob(registry: Deployment, repository: str, size: int, workdir: Path) -> Blob:
    path = workdir / f"push-{repository.replace('/', '-')}"
    try:
        digest, _ = registry.push_random_file(repository, size, path)
    finally:
        path.unlink(missing_ok=True)
    return Blob(repository, digest, size)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ScenarioProxy:
    """A capping fault proxy whose rules are set anew before each run, so that the lift of a
    changing cap counts from that run's first blob request and the storm's share from its
    first Range request; `report` says what they did in the run."""

    def __init__(
        self, proxy: FaultProxy, scenario: str, interval: float, lift_after: float
    ) -> None:
        self.proxy = proxy
        self.scenario = scenario
        self.interval = interval
        self.lift_after = lift_after
        self._drip: Rule | None = None
        self._storm: Rule | None = None

    def arm(self) -> None:
        self.proxy.clear_faults()
        self.proxy.clear()
        lasting = self.lift_after if self.scenario == CAP_LIFT else None
        self._drip = self.proxy.add(
            Fault.drip(DRIP_SIZE, self.interval, lasting=lasting), method="GET", path=BLOB_PATHS
        )
        self._storm = None
        if self.scenario == STORM:
            self._storm = self.proxy.add(
                Fault.respond(429, {"Retry-After": STORM_RETRY_AFTER}),
                method="GET",
                path=BLOB_PATHS,
                ranged=True,
                every=STORM_EVERY,
            )

    def report(self) -> dict[str, Any]:
        assert self._drip is not None
        first = self._drip.first_fired_at
        found: dict[str, Any] = {"first_request_at": first}
        if self.scenario == CAP_LIFT:
            found["lift_at"] = None if first is None else first + self.lift_after
        if self._storm is not None:
            found["throttled_answers"] = self._storm.fired
            found["range_requests"] = self._storm.matched
        return found


def _outcome(result: dict[str, Any]) -> str:
    if not result.get("ok"):
        return f"FAILED: {result.get('error')}"
    text = f"{result['mbps']:.1f} MB/s"
    if result.get("lift_at") is not None:
        text += f", after the lift {auto.fmt_speed(result.get('after_lift_mbps'))} MB/s"
    if "connections" in result:
        text += f", connections most {result['connections']['most']}"
        text += f", at the end {result['connections']['end']}"
    if "throttled_answers" in result:
        text += f", {result['throttled_answers']} 429s"
    return text


def run_cases(
    options: argparse.Namespace, cases: Sequence[Case], the_plan: Plan
) -> list[CaseResult]:
    results = {
        case.name: CaseResult(
            case,
            options.throttle_size if case.throttled else options.size,
            the_plan.unavailable.get(case.name),
        )
        for case in cases
    }
    runnable = [case for case in cases if case.name in the_plan.commands]
    env = worker_env()
    with (
        tempfile.TemporaryDirectory(prefix="acr-blob-bench-") as temp,
        open_filesystem_registry() as registry,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(temp)
        _log(f"bench: registry {registry.url}; pushing {format_size(options.size)} of random data")
        blob = push_blob(registry, REPOSITORY, options.size, workdir)
        blobs = [blob]
        throttled_blob: Blob | None = None
        proxy_urls: dict[str, str] = {}
        scenario_proxies: dict[str, ScenarioProxy] = {}
        interval = DRIP_SIZE / (options.throttle_rate * MB)
        if any(case.throttled for case in runnable):
            throttled_blob = push_blob(
                registry, THROTTLED_REPOSITORY, options.throttle_size, workdir
            )
            blobs.append(throttled_blob)
        if any(case.scenario == CAP for case in runnable):
            proxy = stack.enter_context(FaultProxy(registry.url))
            proxy.add(Fault.drip(DRIP_SIZE, interval), method="GET", path=BLOB_PATHS)
            proxy_urls[CAP] = proxy.url
            _log(
                f"bench: throttling proxy {proxy.url}: {DRIP_SIZE} B every {interval * 1e3:.2f} ms"
            )
        for scenario in (CAP_LIFT, STORM):
            if any(case.scenario == scenario for case in runnable):
                proxy = stack.enter_context(FaultProxy(registry.url))
                scenario_proxies[scenario] = ScenarioProxy(
                    proxy, scenario, interval, options.lift_after
                )
                proxy_urls[scenario] = proxy.url
                _log(f"bench: {scenario} proxy {proxy.url}")
        warm_up(registry, blobs)
        cache_dir: Path | None = None
        if any(case.cached for case in runnable):
            cache_dir = fill_cache(registry, blob, workdir)
            _log(f"bench: blob cache {cache_dir}, holding the blob")
        tls_registry: Deployment | None = None
        tls_blob: Blob | None = None
        if any(case.tls for case in runnable):
            tls_registry = stack.enter_context(open_filesystem_registry(tls=True))
            _log(f"bench: TLS registry {tls_registry.url}")
            tls_blob = push_blob(tls_registry, REPOSITORY, options.size, workdir)
            warm_up(tls_registry, [tls_blob])
        for round_number in range(1, options.rounds + 1):
            for case in runnable:
                served = tls_registry if case.tls else registry
                target = throttled_blob if case.throttled else tls_blob if case.tls else blob
                assert target is not None and served is not None
                url = proxy_urls[case.scenario] if case.throttled else served.url
                scenario_proxy = scenario_proxies.get(case.scenario)
                if scenario_proxy is not None:
                    scenario_proxy.arm()
                result = run_once(
                    case,
                    the_plan.commands[case.name],
                    url,
                    target,
                    workdir,
                    env,
                    served.ca_cert,
                    cache_dir if case.cached else None,
                )
                result["round"] = round_number
                if scenario_proxy is not None:
                    result.update(scenario_proxy.report())
                auto.annotate(result, target.size)
                results[case.name].runs.append(result)
                _log(
                    f"bench: round {round_number}/{options.rounds} {case.name}: {_outcome(result)}"
                )
    return [results[case.name] for case in cases]


# --- the report -----------------------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (completed.stdout or completed.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


def _curl_version() -> str:
    line = _first_line(["curl", "--version"])
    return line.split()[1] if line.startswith("curl ") else line


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
    except (OSError, ValueError):
        pass
    return "?"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory": _memory(),
        "python": platform.python_version(),
        "httpx": _version("httpx"),
        "acr-blob": _version("acr-blob"),
        "requests": _version("requests"),
        "curl": _curl_version() if shutil.which("curl") else "not installed",
        "docker-registry": _first_line(["docker-registry", "--version"]).split()[-1],
    }


def _fmt_speed(mbps: float) -> str:
    return auto.fmt_speed(mbps)


def _ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value is not None and reference else None


def _fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def summarize(results: Sequence[CaseResult]) -> dict[str, Any]:
    """Baseline, limit and every case's figures, as they go into the table and the JSON."""
    by_name = {result.case.name: result for result in results}
    baseline = by_name[BASELINE].median_mbps if BASELINE in by_name else None
    tls_baseline = by_name[TLS_BASELINE].median_mbps if TLS_BASELINE in by_name else None
    copy_baseline = by_name[CACHE_BASELINE].median_mbps if CACHE_BASELINE in by_name else None
    limits: dict[str, float] = {}
    for name in LIMIT_CASES:
        speed = by_name[name].median_mbps if name in by_name else None
        if speed is not None:
            limits[name] = speed
    limit_from = min(limits, key=lambda name: limits[name]) if limits else None
    limit = limits[limit_from] if limit_from is not None else None
    # A throttled case with max_concurrency is compared with the N=1 case of its scenario and
    # kind, or where there is none (iterating under the cap), with the one to a file.
    n1 = {
        (result.case.scenario, result.case.kind): result.median_mbps
        for result in results
        if result.case.throttled and result.case.max_concurrency is None
    }
    cases = []
    for result in results:
        median = result.median_mbps
        entry: dict[str, Any] = {
            "name": result.case.name,
            "kind": result.case.kind,
            "scenario": result.case.scenario,
            "throttled": result.case.throttled,
            "tls": result.case.tls,
            "cached": result.case.cached,
            "max_concurrency": result.case.max_concurrency,
            "size": result.size,
            "unavailable": result.unavailable,
            "median_mbps": median,
            "max_rss_growth_mib": result.rss_growth_mib,
            "runs": result.runs,
        }
        if result.case.scenario == CAP_LIFT:
            entry["after_lift_mbps"] = auto.median_of(result.runs, "after_lift_mbps")
        if result.case.tls:
            entry["vs_tls_baseline"] = _ratio(median, tls_baseline)
        elif result.case.cached:
            entry["vs_cache_baseline"] = _ratio(median, copy_baseline)
        elif not result.case.throttled:
            entry["vs_baseline"] = _ratio(median, baseline)
            entry["vs_limit"] = _ratio(median, limit)
        elif result.case.max_concurrency is not None:
            scenario = result.case.scenario
            reference = n1.get((scenario, result.case.kind), n1.get((scenario, "acr-blob-file")))
            if reference is not None:
                entry["speedup_vs_n1"] = _ratio(median, reference)
        cases.append(entry)
    return {
        "baseline": {"case": BASELINE, "mbps": baseline},
        "limit": {"case": limit_from, "mbps": limit, "candidates": limits},
        "cases": cases,
        "auto": auto.claims(cases),
    }


def _notes(result: CaseResult, entry: dict[str, Any], by_name: dict[str, CaseResult]) -> str:
    notes: list[str] = []
    versions = result.last("versions") or {}
    if versions:
        notes.append(", ".join(f"{k} {v}" for k, v in versions.items()))
    checked = result.last("checked")
    if checked:
        notes.append(checked)
    if result.case.name == "requests+hashlib":
        notes.append("the baseline")
    if result.case.name == THROTTLED_N1:
        n4 = by_name.get(THROTTLED_N4)
        if n4 is None or n4.unavailable is not None:
            notes.append("N=1 only: max_concurrency not available yet")
    if result.case.name == TLS_BASELINE:
        notes.append("the TLS rows' baseline")
    elif entry.get("vs_tls_baseline") is not None:
        notes.append(f"vs TLS requests+hashlib: {_fmt_ratio(entry['vs_tls_baseline'])}")
    if result.case.name == CACHE_BASELINE:
        notes.append("the cache hit's baseline")
    elif entry.get("vs_cache_baseline") is not None:
        notes.append(f"vs disk copy: {_fmt_ratio(entry['vs_cache_baseline'])}")
    if "speedup_vs_n1" in entry:
        notes.append(f"speedup vs N=1: {_fmt_ratio(entry['speedup_vs_n1'])}")
    notes += auto.case_notes(entry)
    failed = [run for run in result.runs if not run.get("ok")]
    if failed:
        notes.append(f"{len(failed)} of {len(result.runs)} runs FAILED: {failed[-1].get('error')}")
    return "; ".join(notes).replace("|", "\\|")


def render_table(results: Sequence[CaseResult], summary: dict[str, Any]) -> str:
    by_name = {result.case.name: result for result in results}
    lines = [
        "| case | MB/s (median) | runs, MB/s | vs baseline | vs limit | peak RSS growth, MiB "
        "| notes |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for result, entry in zip(results, summary["cases"], strict=True):
        name = result.case.name
        if result.case.throttled:
            name = f"{name} ({format_size(result.size)})"
        if result.unavailable is not None:
            lines.append(f"| {name} | {result.unavailable} | - | - | - | - | |")
            continue
        median = entry["median_mbps"]
        speeds = ", ".join(
            _fmt_speed(run["mbps"]) if run.get("ok") else "failed" for run in result.runs
        )
        growth = entry["max_rss_growth_mib"]
        cells = [
            name,
            "FAILED" if median is None else _fmt_speed(median),
            speeds,
            _fmt_ratio(entry.get("vs_baseline")),
            _fmt_ratio(entry.get("vs_limit")),
            "-" if growth is None else f"{growth:.1f}",
            _notes(result, entry, by_name),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(
    options: argparse.Namespace,
    command: str,
    when: datetime.datetime,
    about: dict[str, Any],
    results: Sequence[CaseResult],
    summary: dict[str, Any],
    charts: Sequence[tuple[str, str]] = (),
) -> str:
    """docs/benchmarks.md: the charts (file name, alt text) first, then the auto section, then
    every case."""
    limit = summary["limit"]
    limit_text = (
        f"{_fmt_speed(limit['mbps'])} MB/s, from {limit['case']}"
        if limit["mbps"] is not None
        else "not measured (neither raw-curl nor hash-limit ran)"
    )
    scenarios = {result.case.scenario for result in results}
    interval_ms = DRIP_SIZE / (options.throttle_rate * MB) * 1e3
    lines = [
        "# Blob download benchmarks",
        "",
        f"`{command}`, {when.strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        f"- Machine: {about['platform']}; CPU {about['cpu']}, {about['cores']} cores; "
        f"memory {about['memory']}",
        f"- Python {about['python']}, httpx {about['httpx']}, acr-blob {about['acr-blob']}, "
        f"requests {about['requests']}, curl {about['curl']}, "
        f"docker-registry {about['docker-registry']}",
        f"- Blob: {format_size(options.size)} of random bytes; {options.rounds} round(s); "
        f"limit = {limit_text}",
        "",
    ]
    for name, alt in charts:
        lines += [f"![{alt}]({name})", ""]
    lifted_or_storm = scenarios & {CAP_LIFT, STORM}
    if summary["auto"] or lifted_or_storm:
        lines.append(
            auto.render_section(
                summary["auto"],
                summary["cases"],
                lift_after=options.lift_after,
                storm_every=STORM_EVERY,
            )
        )
    lines += ["## Every case", ""]
    if any(result.case.tls for result in results):
        lines.append(
            "- TLS rows: the same blob from a second registry serving https (TLS 1.3, a "
            "self-signed P-256 certificate the clients trust), compared with requests + hashlib "
            "over the same TLS: the encryption costs the registry, on the same 2 cores, too"
        )
    if any(result.case.cached for result in results):
        lines.append(
            "- Cache rows: the same blob, already in a blob cache (`cache_dir`), filled by one "
            "download just before the rounds, so its entry is in the page cache; acr-blob cache "
            "hit is `download_blob_to_file` of it with `offline=True` (no request at all: a "
            "reflink where the filesystem has them, else a copy, then fsync and rename), "
            "compared with the disk's own copy speed: `shutil.copyfile` of the entry file to a "
            "new file beside the target, fsync included. Near 1.00x means a hit costs what "
            "copying the file costs; far above it, the filesystem made a reflink"
        )
    if CAP in scenarios:
        lines.append(
            f"- Throttled rows: a {format_size(options.throttle_size)} blob through a fault "
            f"proxy that sends each connection's body {DRIP_SIZE // KIB} KiB at a time, "
            f"{interval_ms:.2f} ms apart (a cap of about {options.throttle_rate:g} MB/s per "
            "connection; throttled raw-curl shows what one connection really gets)"
        )
    if CAP_LIFT in scenarios:
        lines.append(
            f"- Changing-cap rows: the {format_size(options.throttle_size)} blob through "
            f"another proxy capping each connection alike until {options.lift_after:g} s after "
            "the run's first blob request, then on every connection, those open included, not "
            "at all (its rule is set anew before each run); MB/s is the whole download's, the "
            "rate after the lift is in the section above. The SDK's progress reports, with "
            "their monotonic times, give the bytes at the lift"
        )
    if STORM in scenarios:
        lines.append(
            f"- 429-storm rows: the {format_size(options.throttle_size)} blob through a third "
            "proxy, capping each connection alike, that answers every "
            f"{auto.ordinal(STORM_EVERY)} Range request with 429 and `Retry-After: "
            f"{STORM_RETRY_AFTER}` (counted afresh each run)"
        )
    if any(result.case.max_concurrency == AUTO for result in results):
        lines.append(
            '- auto rows: `max_concurrency="auto"`; the connection counts come from the '
            "controller's `auto:` DEBUG lines on the `acr_blob` logger, which the worker keeps"
        )
    lines += [
        "",
        "Method: an anonymous docker-registry on 127.0.0.1 serves the blob from filesystem "
        "storage (read once beforehand, so from the page cache); each case runs in its own "
        "fresh interpreter (raw-curl: one `curl -o /dev/null`, timed from outside), the rounds "
        "interleaved (every case once per round); MB/s is 10^6 bytes per second of wall time "
        "of the download call alone, after imports and making the client, median over the "
        "rounds; vs baseline compares with requests + hashlib (1 MiB chunks, verified), vs "
        "limit with the lower of raw transfer and in-memory sha256 (1 MiB updates); peak RSS "
        "growth is the process's peak RSS (VmHWM) at the end minus right after imports, the "
        "largest over the rounds. The bare rows are the most a plain verified loop gets here "
        "(http.client `readinto` + hashlib, no retries or partial file; to file through the "
        "SDK's O_DIRECT writer); the SDK's rows against them show what its own layers cost. "
        "Absolute figures drift on shared machines: "
        "compare ratios within one run.",
        "",
        render_table(results, summary),
        "",
    ]
    return "\n".join(lines)


def draw_charts(output_dir: Path, summary: dict[str, Any], lift_after: float) -> list[Path]:
    """The SVG charts in ``output_dir``; none without matplotlib (a development dependency).
    A chart with nothing to show this run is removed rather than left from an earlier one."""
    try:
        from tools.bench import charts
    except ImportError as error:
        _log(f"bench: no charts ({error}); pip install -e '.[dev]' brings matplotlib")
        return []
    output_dir.mkdir(parents=True, exist_ok=True)
    (throughput_name, _), (parts_name, _) = CHARTS
    throughput, parts = output_dir / throughput_name, output_dir / parts_name
    made = {
        throughput: charts.throughput(summary["cases"], throughput),
        parts: charts.auto_parts(summary["cases"], lift_after, parts),
    }
    for path, drawn in made.items():
        if not drawn:
            path.unlink(missing_ok=True)
    return [path for path, drawn in made.items() if drawn]


def write_files(
    output_dir: Path,
    markdown: str,
    data: dict[str, Any],
) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "benchmarks.md").write_text(markdown)
    (output_dir / "benchmarks.json").write_text(json.dumps(data, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    options = parser.parse_args(arguments)
    cases = select_cases(parser, options)
    when = datetime.datetime.now(datetime.UTC)
    command = shlex.join(["python", "-m", "tools.bench", *arguments])
    the_plan = plan(cases)
    results = run_cases(options, cases, the_plan)
    summary = summarize(results)
    about = machine()
    drawn = [] if options.no_write else draw_charts(options.output_dir, summary, options.lift_after)
    charts = [(name, alt) for name, alt in CHARTS if options.output_dir / name in drawn]
    markdown = render(options, command, when, about, results, summary, charts)
    print(markdown, flush=True)
    if not options.no_write:
        data = {
            "generated": when.isoformat(timespec="seconds"),
            "command": command,
            "machine": about,
            "settings": {
                "size": options.size,
                "rounds": options.rounds,
                "throttle": options.throttle,
                "throttle_size": options.throttle_size,
                "throttle_rate_mbps": options.throttle_rate,
                "drip_size": DRIP_SIZE,
                "lift_after": options.lift_after,
                "storm_every": STORM_EVERY,
                "storm_retry_after": STORM_RETRY_AFTER,
                "mb": MB,
            },
            "charts": [name for name, _ in charts],
            **summary,
        }
        write_files(options.output_dir, markdown, data)
        written = ", ".join(["benchmarks.json", *(name for name, _ in charts)])
        _log(f"bench: wrote {options.output_dir / 'benchmarks.md'} and {written}")
    failed = [r.case.name for r in results if r.unavailable is None and r.median_mbps is None]
    if failed:
        _log(f"bench: no successful run for {', '.join(failed)}")
        return 1
    return 0
