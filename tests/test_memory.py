"""Memory stays bounded while a large blob streams: peak RSS measured in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.testbed import Deployment

SIZE = 256 * 1024 * 1024
BOUND = 64 * 1024 * 1024

# VmHWM is the process's own peak RSS so far: read after imports it is the baseline, read at the
# end it is the peak of the download itself. (Not ru_maxrss: Linux carries the parent's peak
# over into a child started with vfork, so in a child it can start above the download's.)
SCRIPT = """
import asyncio, json, sys
from acr_blob import AsyncBlobClient, BlobClient

endpoint, repository, digest, api, target = sys.argv[1:]
# "sync-file-4": max_concurrency=4
concurrency = int(api.rpartition("-")[2]) if api.count("-") == 2 else 1

def peak():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")

async def run_async():
    async with AsyncBlobClient(endpoint) as client:
        if api.startswith("async-file"):
            await client.download_blob_to_file(
                repository, digest, target, max_concurrency=concurrency
            )
            return
        async with await client.download_blob(
            repository, digest, max_concurrency=concurrency
        ) as download:
            async for chunk in download:
                pass

baseline = peak()
if api.startswith("async"):
    asyncio.run(run_async())
else:
    with BlobClient(endpoint) as client:
        if api.startswith("sync-file"):
            client.download_blob_to_file(repository, digest, target, max_concurrency=concurrency)
        elif api == "sync-readall":
            with client.download_blob(repository, digest) as download:
                data = download.readall()
        else:
            with client.download_blob(repository, digest, max_concurrency=concurrency) as download:
                for chunk in download:
                    pass
print(json.dumps({"baseline": baseline, "peak": peak()}))
"""


@pytest.fixture(scope="module")
def large_blob(registry: Deployment, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    path = tmp_path_factory.mktemp("large") / "blob.bin"
    return "memory/large", registry.push_random_file("memory/large", SIZE, path).digest


def growth(registry: Deployment, digest: str, api: str, target: Path) -> int:
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, registry.url, "memory/large", digest, api, str(target)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    numbers = json.loads(completed.stdout)
    return int(numbers["peak"] - numbers["baseline"])


@pytest.mark.parametrize(
    "api",
    [
        "sync-iterate",
        "sync-iterate-4",
        "sync-file",
        "sync-file-4",
        "async-iterate",
        "async-iterate-4",
        "async-file",
        "async-file-4",
    ],
)
def test_streaming_memory_is_bounded(
    registry: Deployment, large_blob: tuple[str, str], tmp_path: Path, api: str
) -> None:
    _, digest = large_blob
    grew = growth(registry, digest, api, tmp_path / "blob.bin")
    assert grew < BOUND, f"{api}: peak RSS grew by {grew / 2**20:.1f} MiB"
    if "file" in api:
        assert (tmp_path / "blob.bin").stat().st_size == SIZE


def test_the_measurement_sees_a_whole_blob_in_memory(
    registry: Deployment, large_blob: tuple[str, str], tmp_path: Path
) -> None:
    # The control: readall() holds the blob, and the same measurement must show it.
    _, digest = large_blob
    assert growth(registry, digest, "sync-readall", tmp_path / "unused") > SIZE * 0.9
