"""The scenario catalog against this SDK (sync and async): CI's share of `make compare`."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tools.compare import run as compare
from tools.compare.scenarios import PULL_PLATFORM, PULL_TAG, Setup, judge
from tools.testbed import (
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    PlatformImage,
    PushedContent,
    PushedImage,
)

# The sync client on docker-registry, the async one with an AAD credential on the ACR
# deployment: every row once per flavour and once per deployment, in the time of two columns.
OURS = ["acr-blob-sync", "acr-blob-async (ACR)"]
ACR_ONLY = {
    "sas-expiry": "fresh-url",
    "token-expiry": "re-auth",
    "storage-xml-error": "error-code",
    "digest-only-on-307": "bytes",
    "corrupt-behind-307": "error",
}
MORE_THAN_ONE_PROCESS = {"restart-resume": "resumed", "two-processes": "fetched-once"}


@pytest.mark.usefixtures("registry_binary_path", "azurite_path")
def test_every_scenario_passes_for_acr_blob(tmp_path: Path) -> None:
    results = compare.run(OURS, None)
    verdicts = {key: v["result"] for key, v in results["verdicts"].items()}
    scenarios = json.loads(compare.CATALOG.read_text())["scenarios"]
    assert len(verdicts) == 2 * len(scenarios) >= 40
    pulls = {s["name"]: s["judge"] for s in scenarios if s.get("pull")}
    assert pulls == {
        "pull-by-tag": "image",
        "pull-artifact-files": "files",
        "pull-corrupt-layer": "pull-error",
    }
    judges = {s["name"]: s["judge"] for s in scenarios}
    assert ACR_ONLY.items() <= judges.items()
    assert MORE_THAN_ONE_PROCESS.items() <= judges.items()
    assert judges["parallel-ranges"] == "parallel"
    deployments = {key: v["deployment"] for key, v in results["verdicts"].items()}
    for scenario in scenarios:
        name = scenario["name"]
        ours = "acr" if name in ACR_ONLY else "registry"
        assert deployments[f"{name}|acr-blob-sync"] == ours
        assert deployments[f"{name}|acr-blob-async (ACR)"] == "acr"
    failed = {k: results["verdicts"][k]["observation"] for k, v in verdicts.items() if v != "pass"}
    assert failed == {}
    compare.write_table(results, tmp_path)
    table = (tmp_path / "parity.md").read_text()
    assert table.count("| pass:") == 2 * len(scenarios)
    assert "| n/a" not in table


@pytest.mark.usefixtures("registry_binary_path")
def test_the_containerd_runner_tells_its_two_ways_of_taking_a_blob_apart() -> None:
    # A plain skip, in CI too: CI runs the catalog against acr-blob only, and the runner is
    # built by `make compare` (tools/compare/go/build.sh), from Go packages CI does not install.
    if not compare.CONTAINERD_RUNNER.exists():
        pytest.skip(f"{compare.CONTAINERD_RUNNER} is not built: tools/compare/go/build.sh")
    results = compare.run(["containerd", "containerd-ingest"], ["plain", "flipped-byte"])
    seen = {key: (v["result"], v["observation"]) for key, v in results["verdicts"].items()}
    assert seen == {
        "plain|containerd": ("pass", "downloaded the right bytes"),
        "flipped-byte|containerd": ("fail", "reported success (wrong bytes)"),
        "plain|containerd-ingest": ("pass", "downloaded the right bytes"),
        "flipped-byte|containerd-ingest": ("pass", "detected: errdefs.ErrFailedPrecondition"),
    }
    assert results["clients"]["containerd"] == ["containerd remotes/docker 1.6.20 (Fetch)"]


@pytest.mark.usefixtures("azurite_path")
def test_the_azure_sdks_sign_in_with_a_fake_aad_credential_on_the_acr_deployment() -> None:
    # Skipped where the peers are not installed (CI): tools/compare/install-peers.sh.
    azure = ["azure-containerregistry", "@azure/container-registry"]
    missing = [name for name in azure if compare.available(_client(name))]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (tools/compare/install-peers.sh)")
    results = compare.run(azure, ["plain", "token-expiry"])
    seen = {key: (v["result"], v["deployment"]) for key, v in results["verdicts"].items()}
    assert seen == {
        f"{s}|{name}": ("pass", "acr") for s in ("plain", "token-expiry") for name in azure
    }


def _client(name: str) -> compare.Client:
    return next(client for client in compare.CLIENTS if client.name == name)


# The judges of the scenarios run in more than one process, and of the parallel one, on
# hand-made results.


def _blob_setup(tmp_path: Path, size: int = 1000) -> Setup:
    data = os.urandom(size)
    (tmp_path / "blob-0").write_bytes(data)
    return Setup("http://127.0.0.1:1", "r", "sha256:" + hashlib.sha256(data).hexdigest(), data)


def _download(ok: bool = True, elapsed: float = 0.1) -> dict[str, object]:
    return {"ok": ok, "error": None if ok else "SomeError: it broke", "elapsed": elapsed}


def _judged(rule: str, setup: Setup, root: Path, **observed: object) -> tuple[str, str]:
    catalog = json.loads(compare.CATALOG.read_text())["scenarios"]
    scenario = next(s for s in catalog if s["judge"] == rule)
    report = {"client": "x", "unsupported": None, "downloads": [_download()], **observed}
    verdict = judge(scenario, setup, report, root)
    return verdict.result, verdict.observation


def test_the_restart_judge_wants_a_killed_first_run_and_less_than_the_blob(
    tmp_path: Path,
) -> None:
    setup = _blob_setup(tmp_path)
    killed = {"first_run_killed": True, "first_run_why": "killed"}
    rest = {**killed, "second_run_bytes": 700}
    assert _judged("resumed", setup, tmp_path, restart=rest)[0] == "pass"
    again = {**killed, "second_run_bytes": 1000}
    assert _judged("resumed", setup, tmp_path, restart=again) == (
        "fail",
        "the second run fetched the whole blob again",
    )
    early = {"first_run_killed": False, "first_run_why": "SomeError", "second_run_bytes": 0}
    assert _judged("resumed", setup, tmp_path, restart=early) == (
        "fail",
        "the first run ended before it was killed: SomeError",
    )


def test_the_two_process_judge_counts_how_often_the_blob_was_fetched(tmp_path: Path) -> None:
    setup = _blob_setup(tmp_path)
    both = [{"downloads": [_download()]}, {"downloads": [_download()]}]
    once = _judged("fetched-once", setup, tmp_path, processes=both, fetched_bytes=1000)
    assert once == ("pass", "right bytes; the blob was fetched once")
    twice = _judged("fetched-once", setup, tmp_path, processes=both, fetched_bytes=2000)
    assert twice == ("fail", "right bytes; the blob was fetched 2.0 times")
    one_failed = [both[0], {"downloads": [_download(ok=False)]}]
    assert _judged("fetched-once", setup, tmp_path, processes=one_failed, fetched_bytes=1000) == (
        "fail",
        "process 2 failed: SomeError",
    )


def test_the_parallel_judge_wants_less_than_one_connections_time(tmp_path: Path) -> None:
    catalog = json.loads(compare.CATALOG.read_text())["scenarios"]
    scenario = next(s for s in catalog if s["judge"] == "parallel")
    one = scenario["size"] * scenario["drip"]["interval"] / scenario["drip"]["chunk"]
    setup = _blob_setup(tmp_path, scenario["size"])
    seen = {}
    for elapsed in (one / 4, one):
        report = {"client": "x", "unsupported": None, "downloads": [_download(elapsed=elapsed)]}
        seen[elapsed] = judge(scenario, setup, report, tmp_path).result
    assert seen == {one / 4: "pass", one: "fail"}


def test_the_error_code_judge_wants_the_storage_code_named(tmp_path: Path) -> None:
    setup = _blob_setup(tmp_path)
    catalog = json.loads(compare.CATALOG.read_text())["scenarios"]
    scenario = next(s for s in catalog if s["judge"] == "error-code")
    results = {}
    for error in ("StorageError: 403 AuthorizationPermissionMismatch", "HTTPError: 403"):
        download = {"ok": False, "error": error, "elapsed": 0.1}
        report = {"client": "x", "unsupported": None, "downloads": [download]}
        results[error.split(":")[0]] = judge(scenario, setup, report, tmp_path).result
    assert results == {"StorageError": "pass", "HTTPError": "fail"}


# The pull judges on hand-made results: each way a pull can go wrong is told apart.


def _content(media_type: str, data: bytes) -> PushedContent:
    return PushedContent(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), data)


def _platform_image(architecture: str) -> PlatformImage:
    config = _content(OCI_CONFIG, json.dumps({"architecture": architecture}).encode())
    layers = tuple(_content(OCI_LAYER_GZIP, os.urandom(100)) for _ in range(2))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    document = _content(OCI_MANIFEST, json.dumps(manifest, indent=3).encode())
    return PlatformImage("linux", architecture, None, document, config, layers, ())


def _pull_setup() -> Setup:
    setup = Setup("http://127.0.0.1:1", "r", "", b"", platform=PULL_PLATFORM)
    images = (_platform_image("amd64"), _platform_image("arm64"))
    setup.image = PushedImage("r", PULL_TAG, None, images)
    setup.notes["tag"] = PULL_TAG
    return setup


def _layout(root: Path, manifest: bytes, blobs: list[bytes], tag: str | None = PULL_TAG) -> None:
    folder = root / "pull-0" / "blobs" / "sha256"
    folder.mkdir(parents=True)
    for data in [manifest, *blobs]:
        (folder / hashlib.sha256(data).hexdigest()).write_bytes(data)
    entries = []
    if tag is not None:
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        entries.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest)})
        entries[0]["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (root / "pull-0" / "index.json").write_text(json.dumps({"manifests": entries}))


def _verdict(rule: str, setup: Setup, root: Path, ok: bool = True) -> tuple[str, str]:
    scenario = {"pull": "image", "judge": rule}
    download = {"ok": ok, "error": None if ok else "SomeError: it broke", "elapsed": 0.1}
    observed = {"client": "x", "unsupported": None, "downloads": [download]}
    verdict = judge(scenario, setup, observed, root)
    return verdict.result, verdict.observation


def test_the_image_judge_passes_a_whole_layout_or_dir(tmp_path: Path) -> None:
    setup = _pull_setup()
    amd64 = setup.wanted
    _layout(tmp_path / "a", amd64.manifest.data, [blob.data for blob in amd64.blobs])
    assert _verdict("image", setup, tmp_path / "a") == (
        "pass",
        "manifest, config and 2 layers byte for byte",
    )
    # A dir: folder with the manifest re-serialised: passes, and says so.
    folder = tmp_path / "b" / "pull-0"
    folder.mkdir(parents=True)
    for blob in amd64.blobs:
        (folder / blob.digest.partition(":")[2]).write_bytes(blob.data)
    (folder / "manifest.json").write_text(json.dumps(json.loads(amd64.manifest.data)))
    result, observation = _verdict("image", setup, tmp_path / "b")
    assert result == "pass" and "the manifest re-serialised" in observation


def test_the_image_judge_fails_what_is_not_that_image(tmp_path: Path) -> None:
    setup = _pull_setup()
    amd64, arm64 = setup.image.images if setup.image else ()
    blobs = [blob.data for blob in amd64.blobs]
    cases = {
        "nothing": None,
        "arm64": (arm64.manifest.data, [blob.data for blob in arm64.blobs], PULL_TAG),
        "untagged": (amd64.manifest.data, blobs, None),
        "no layer 2": (amd64.manifest.data, blobs[:2], PULL_TAG),
        "recompressed": (b'{"config": {"digest": "sha256:00"}, "layers": []}', blobs, PULL_TAG),
    }
    seen = {}
    for name, case in cases.items():
        root = tmp_path / name.replace(" ", "-")
        root.mkdir()
        if case is not None:
            _layout(root, case[0], case[1], case[2])
        seen[name] = _verdict("image", setup, root)
    assert seen == {
        "nothing": ("fail", "reported success but wrote nothing"),
        "arm64": ("fail", "pulled linux/arm64, not linux/amd64"),
        "untagged": (
            "fail",
            "reported success but wrote an index.json with 0 entries named v1 (5 files)",
        ),
        "no layer 2": ("fail", "reported success with no layer 2"),
        "recompressed": ("fail", "wrote a manifest that names other blobs than the registry's"),
    }
    assert _verdict("image", setup, tmp_path / "nothing", ok=False) == ("fail", "failed: SomeError")


def test_the_pull_error_judge_wants_an_error_and_nothing_naming_the_image(tmp_path: Path) -> None:
    setup = _pull_setup()
    amd64 = setup.wanted
    corrupt = amd64.layers[-1]
    setup.notes["corrupt"] = corrupt.digest
    good = [blob.data for blob in amd64.blobs[:-1]]
    (tmp_path / "clean").mkdir()
    assert _verdict("pull-error", setup, tmp_path / "clean", ok=False) == (
        "pass",
        "detected: SomeError",
    )
    _layout(tmp_path / "tagged", amd64.manifest.data, good)
    assert _verdict("pull-error", setup, tmp_path / "tagged", ok=False) == (
        "fail",
        "detected (SomeError) but left an index.json naming v1",
    )
    bad = tmp_path / "bad" / "pull-0" / "blobs" / "sha256"
    bad.mkdir(parents=True)
    # A resumable partial file is no blob: it is not held against the client.
    (bad / f".sha256-{corrupt.digest.partition(':')[2]}.partial").write_bytes(b"half")
    assert _verdict("pull-error", setup, tmp_path / "bad", ok=False)[0] == "pass"
    (bad / corrupt.digest.partition(":")[2]).write_bytes(b"flipped")
    assert _verdict("pull-error", setup, tmp_path / "bad", ok=False)[1] == (
        "detected (SomeError) but left a blob that fails its digest"
    )
    assert _verdict("pull-error", setup, tmp_path / "clean") == (
        "fail",
        "reported success and wrote nothing",
    )
