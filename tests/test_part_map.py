"""Parallel downloads that survive a crash: the part map beside the partial file says which
spans are complete, and the next call fetches only the others.

A 4-part download (32 MiB over two connections, parts of 8 MiB) runs in a CLI process behind
the throttled fault proxy and is killed with SIGKILL at several points; the proxy counts the
body bytes the next call really fetched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from acr_blob import RetryPolicy, TransportError
from acr_blob._part_map import PartMap, merge, missing
from acr_blob._ranges import plan_parts
from acr_blob.references import parse_digest
from tests.drivers import Driver
from tools.faultproxy import Fault, FaultProxy
from tools.testbed import Deployment

SIZE = 32 * 1024 * 1024
REPOSITORY = "partmap/blob"
BLOBS = r"/blobs/"
CONCURRENCY = 2
# Some 2.6 MB/s per connection: each 8 MiB part takes about 3 s.
THROTTLE = Fault.drip(128 * 1024, 0.05)
# What a closed connection may still have had on its way when the client stopped reading.
SLACK = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def blob(registry: Deployment) -> tuple[str, bytes]:
    data = os.urandom(SIZE)
    return registry.push(REPOSITORY, data), data


def names(digest: str) -> tuple[str, str]:
    hex_ = digest.removeprefix("sha256:")
    return f".sha256-{hex_}.partial", f".sha256-{hex_}.parts"


def covered(spans: list[tuple[int, int]]) -> int:
    return sum(end - first for first, end in spans)


def read_map(path: Path) -> list[tuple[int, int]] | None:
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return merge((a, b) for a, b in document["done"])


def test_four_parts_over_two_connections() -> None:
    parts = plan_parts(0, SIZE, CONCURRENCY)
    assert len(parts) == 4 and all(end - first == SIZE // 4 for first, end in parts)


def crash(
    proxied: FaultProxy,
    digest: str,
    folder: Path,
    when: Callable[[list[tuple[int, int]] | None, int], bool],
) -> list[tuple[int, int]]:
    """Run the CLI's 4-part download, SIGKILL it once ``when(map spans, partial's allocated
    bytes)`` holds, and return the map as the crash left it."""
    partial, parts = (folder / name for name in names(digest))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "overlay"), str(ROOT / "generated"), str(ROOT)]),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "acr_blob",
            "get",
            f"{proxied.url}/{REPOSITORY}@{digest}",
            "-o",
            str(folder / "layer.bin"),
            "--anonymous",
            "--max-concurrency",
            str(CONCURRENCY),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline
            allocated = partial.stat().st_blocks * 512 if partial.exists() else 0
            if when(read_map(parts), allocated):
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()
    assert not (folder / "layer.bin").exists()
    spans = read_map(parts)
    assert spans is not None
    return spans


def resume(proxied: FaultProxy, digest: str, folder: Path, mode: str = "sync") -> int:
    """The next call, in parts, through the proxy's faults; returns the body bytes it fetched."""
    proxied.clear()
    Driver(mode, proxied.url).to_file(
        REPOSITORY, digest, folder / "layer.bin", max_concurrency=CONCURRENCY
    )
    return proxied.body_bytes


@pytest.mark.parametrize(
    ("point", "when"),
    [
        ("before any part completes", lambda spans, allocated: spans == [] and allocated > 0),
        ("with two parts done", lambda spans, _: spans is not None and covered(spans) >= SIZE // 2),
    ],
    ids=["no-part-done", "two-parts-done"],
)
def test_kill_9_then_only_the_missing_spans_are_fetched(
    proxied: FaultProxy,
    blob: tuple[str, bytes],
    tmp_path: Path,
    point: str,
    when: Callable[[list[tuple[int, int]] | None, int], bool],
) -> None:
    digest, data = blob
    proxied.add(THROTTLE, path=BLOBS)
    spans = crash(proxied, digest, tmp_path, when)
    if point == "with two parts done":
        assert covered(spans) >= SIZE // 2
    else:
        assert covered(spans) == 0
    fetched = resume(proxied, digest, tmp_path)
    need = SIZE - covered(spans)
    assert need <= fetched <= need + SLACK
    assert (tmp_path / "layer.bin").read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["layer.bin"]  # map and partial gone


def test_a_crash_during_the_final_hash_fetches_nothing_again(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path
) -> None:
    """What a kill during the final hash leaves: every byte on disk, a map that lists them all,
    no target."""
    digest, data = blob
    plant(tmp_path, digest, data, [(0, SIZE)])
    # One request, for the bytes past the end: its 416 (and the few bytes of its message)
    # says the partial file holds them all, and the hash of the file decides.
    assert resume(proxied, digest, tmp_path) < 1000
    assert [r.header("Range") for r in proxied.requests] == [f"bytes={SIZE}-"]
    assert (tmp_path / "layer.bin").read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["layer.bin"]


def plant(folder: Path, digest: str, content: bytes, spans: list[tuple[int, int]]) -> None:
    partial_name, _ = names(digest)
    partial = folder / partial_name
    partial.write_bytes(content)
    partial.chmod(0o600)
    fd = os.open(partial, os.O_RDONLY)
    try:
        PartMap(partial, parse_digest(digest)).save(fd, SIZE, spans)
    finally:
        os.close(fd)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_missing_spans_in_the_middle_are_fetched_in_parts(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path, mode: str
) -> None:
    digest, data = blob
    quarter = SIZE // 4
    # Parts 0 and 3 are complete; 1 and 2 are holes.
    content = data[:quarter] + bytes(2 * quarter) + data[3 * quarter :]
    plant(tmp_path, digest, content, [(0, quarter), (3 * quarter, SIZE)])
    resume(proxied, digest, tmp_path, mode)
    assert (tmp_path / "layer.bin").read_bytes() == data
    ranges = sorted(r.header("Range") or "" for r in proxied.requests)
    # The first answer serves part 1 (from the prefix on), a second connection part 2.
    assert ranges == [f"bytes={2 * quarter}-{3 * quarter - 1}", f"bytes={quarter}-"]
    assert [p.name for p in tmp_path.iterdir()] == ["layer.bin"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_map_that_lies_costs_a_full_download_never_a_wrong_file(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path, mode: str
) -> None:
    digest, data = blob
    quarter = SIZE // 4
    # The map says parts 0, 1 and 3 are complete; part 1 is zeros.
    content = data[:quarter] + bytes(quarter) + bytes(quarter) + data[3 * quarter :]
    plant(tmp_path, digest, content, [(0, 2 * quarter), (3 * quarter, SIZE)])
    resume(proxied, digest, tmp_path, mode)
    assert (tmp_path / "layer.bin").read_bytes() == data
    gets = [r.header("Range") for r in proxied.requests]
    assert gets[0] == f"bytes={2 * quarter}-"  # believed the map first
    assert None in gets  # then, the digest wrong, started again from byte 0
    assert [p.name for p in tmp_path.iterdir()] == ["layer.bin"]


@pytest.mark.parametrize(
    "broken",
    [
        b"{not json",
        json.dumps({"digest": "sha256:" + "0" * 64, "size": SIZE, "done": [[0, SIZE]]}).encode(),
        json.dumps({"digest": "DIGEST", "size": SIZE, "done": [[0, 2 * SIZE]]}).encode(),
    ],
    ids=["not-json", "other-digest", "past-the-end"],
)
def test_an_unusable_map_starts_the_partial_again(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path, broken: bytes
) -> None:
    digest, data = blob
    partial_name, map_name = names(digest)
    (tmp_path / partial_name).write_bytes(data[: SIZE // 2])
    (tmp_path / map_name).write_bytes(broken.replace(b"DIGEST", digest.encode()))
    resume(proxied, digest, tmp_path)
    assert (tmp_path / "layer.bin").read_bytes() == data
    assert None in [r.header("Range") for r in proxied.requests]  # from byte 0
    assert [p.name for p in tmp_path.iterdir()] == ["layer.bin"]


def test_a_link_at_the_maps_name_is_neither_read_nor_written_through(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path
) -> None:
    digest, data = blob
    partial_name, map_name = names(digest)
    victim = tmp_path / "elsewhere" / "victim"
    victim.parent.mkdir()
    # A map the victim's bytes would make believable, were it followed.
    victim.write_text(json.dumps({"digest": digest, "size": SIZE, "done": [[0, SIZE]]}))
    before = victim.read_bytes()
    (tmp_path / partial_name).write_bytes(bytes(SIZE))
    (tmp_path / map_name).symlink_to(victim)
    # A failure after one part leaves a map written (by rename, over the link).
    proxied.add(Fault.cut_after(0), path=BLOBS, ranged=True)
    proxied.add(Fault.cut_after(SIZE // 4 + 1000), path=BLOBS, ranged=False)
    driver = Driver("sync", proxied.url, retry=RetryPolicy.never())
    with pytest.raises(TransportError):
        driver.to_file(REPOSITORY, digest, tmp_path / "layer.bin", max_concurrency=CONCURRENCY)
    assert victim.read_bytes() == before
    written = tmp_path / map_name
    assert written.is_file() and not written.is_symlink()
    spans = read_map(written)
    # The link was not believed: what the map lists is what arrived, from byte 0.
    assert spans is not None and len(spans) == 1 and spans[0][0] == 0
    assert 0 < spans[0][1] < SIZE // 4 + 1000
    proxied.clear_faults()
    proxied.clear()
    driver.to_file(REPOSITORY, digest, tmp_path / "layer.bin", max_concurrency=CONCURRENCY)
    assert (tmp_path / "layer.bin").read_bytes() == data
    assert proxied.requests[0].header("Range") == f"bytes={spans[0][1]}-"


def test_one_stream_after_a_parallel_partial_keeps_the_prefix_only(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path
) -> None:
    digest, data = blob
    quarter = SIZE // 4
    plant(
        tmp_path,
        digest,
        data[:quarter] + bytes(quarter) + data[2 * quarter :],
        [
            (0, quarter),
            (2 * quarter, SIZE),
        ],
    )
    proxied.clear()
    Driver("sync", proxied.url).to_file(REPOSITORY, digest, tmp_path / "layer.bin")
    assert (tmp_path / "layer.bin").read_bytes() == data
    assert [r.header("Range") for r in proxied.requests] == [f"bytes={quarter}-"]


def test_spans() -> None:
    assert merge([(5, 9), (0, 3), (3, 4), (8, 12), (20, 20)]) == [(0, 4), (5, 12)]
    assert missing([(0, 4), (6, 8)], 0, 10) == [(4, 6), (8, 10)]
    assert missing([(0, 4), (6, 8)], 5, 10) == [(5, 6), (8, 10)]
    assert missing([], 3, 10) == [(3, 10)]
    assert missing([(0, 10)], 0, 10) == []
    assert plan_parts(0, 64 << 20, 2, [(0, 8 << 20), (24 << 20, 32 << 20)]) == [
        (8 << 20, 16 << 20),
        (16 << 20, 24 << 20),
        (32 << 20, 40 << 20),
        (40 << 20, 48 << 20),
        (48 << 20, 56 << 20),
        (56 << 20, 64 << 20),
    ]
