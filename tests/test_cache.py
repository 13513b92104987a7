"""The shared cache (cache_dir): one download per blob for every target and process that shares
the folder, targets that are copies and never links, offline work, eviction, and a cache folder
that cannot be written never failing a download."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from acr_blob import BlobCache, CacheMissError, DigestMismatchError, parse_digest
from acr_blob.cache import CACHE_DIR_ENV, OFFLINE_ENV
from tests.conftest import skip_or_fail
from tests.drivers import MODES, Driver
from tools.faultproxy import FaultProxy
from tools.testbed import Deployment, write_oci_index

SIZE = 4 * 1024 * 1024
REPOSITORY = "cache/blob"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def blob(registry: Deployment) -> tuple[str, bytes]:
    data = os.urandom(SIZE)
    return registry.push(REPOSITORY, data), data


def blob_gets(proxy: FaultProxy) -> int:
    return sum(1 for r in proxy.requests if r.method == "GET" and "/blobs/" in r.path)


def entry_of(cache_dir: Path, digest: str) -> Path:
    checked = parse_digest(digest)
    return cache_dir / "blobs" / checked.algorithm / checked.hex


@pytest.mark.parametrize("mode", MODES)
def test_three_targets_from_one_cache_make_one_blob_get(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path, mode: str
) -> None:
    digest, data = blob
    cache_dir = tmp_path / "cache"
    driver = Driver(mode, proxied.url, cache_dir=cache_dir)
    targets = [tmp_path / f"t{index}" / "layer.bin" for index in range(3)]
    for target in targets:
        target.parent.mkdir()
        properties = driver.to_file(REPOSITORY, digest, target)
        assert properties.digest == digest and properties.size == SIZE
    assert blob_gets(proxied) == 1
    entry = entry_of(cache_dir, digest)
    assert entry.read_bytes() == data
    assert stat.S_IMODE(entry.stat().st_mode) & 0o222 == 0  # entries are read-only
    assert (cache_dir / "oci-layout").read_text().strip() == '{"imageLayoutVersion":"1.0.0"}'
    for target in targets:
        assert target.read_bytes() == data
        assert list(target.parent.iterdir()) == [target]
        status = target.stat()
        assert status.st_nlink == 1 and status.st_ino != entry.stat().st_ino
        assert stat.S_IMODE(status.st_mode) & 0o200  # the target is the user's to edit
    # Nothing but the entry and the layout file: no lock or partial file is left behind.
    assert sorted(p.name for p in (cache_dir / "blobs" / "sha256").iterdir()) == [entry.name]


@pytest.mark.parametrize("mode", MODES)
def test_iterating_streams_from_the_cache(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path, mode: str
) -> None:
    digest, data = blob
    driver = Driver(mode, proxied.url, cache_dir=tmp_path / "cache")
    assert driver.iterate(REPOSITORY, digest) == data  # a miss: into the cache, then out
    assert driver.iterate(REPOSITORY, digest) == data
    assert driver.readall(REPOSITORY, digest) == data
    assert blob_gets(proxied) == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_corrupt_entry_fails_iteration(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path, mode: str
) -> None:
    digest, _ = blob
    cache_dir = tmp_path / "cache"
    driver = Driver(mode, proxied.url, cache_dir=cache_dir)
    driver.to_file(REPOSITORY, digest, tmp_path / "layer.bin")
    flip_entry_byte(entry_of(cache_dir, digest), SIZE // 2)
    with pytest.raises(DigestMismatchError):
        driver.iterate(REPOSITORY, digest)
    assert BlobCache(cache_dir).verify()[0].digest == digest
    assert not entry_of(cache_dir, digest).exists()


def flip_entry_byte(entry: Path, offset: int) -> None:
    entry.chmod(0o644)
    with entry.open("r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0xFF]))


def test_processes_sharing_a_cache_download_once(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path
) -> None:
    from tests.test_shared_downloads import THROTTLE, requested_bytes

    digest, data = blob
    proxied.add(THROTTLE, path=r"/blobs/")
    cache_dir = tmp_path / "cache"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "overlay"), str(ROOT / "generated"), str(ROOT)]),
        CACHE_DIR_ENV: str(cache_dir),
    }
    targets = [tmp_path / f"layer-{index}.bin" for index in range(3)]
    command = [sys.executable, "-m", "acr_blob", "get", f"{proxied.url}/{REPOSITORY}@{digest}"]
    processes = [
        subprocess.Popen(
            [*command, "-o", str(target), "--anonymous"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for target in targets
    ]
    outcomes = [(p.wait(timeout=120), *p.communicate()) for p in processes]
    assert [code for code, _, _ in outcomes] == [0, 0, 0], outcomes
    for target in targets:
        assert target.read_bytes() == data
    assert requested_bytes(proxied, SIZE) <= 1.25 * SIZE
    assert blob_gets(proxied) == 1


@pytest.mark.parametrize("mode", MODES)
def test_offline_hit_sends_nothing_and_a_miss_raises(
    proxied: FaultProxy,
    blob: tuple[str, bytes],
    registry: Deployment,
    tmp_path: Path,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    digest, data = blob
    cache_dir = tmp_path / "cache"
    Driver(mode, proxied.url, cache_dir=cache_dir).to_file(REPOSITORY, digest, tmp_path / "a")
    proxied.clear()
    offline = Driver(mode, proxied.url, cache_dir=cache_dir, offline=True)
    properties = offline.to_file(REPOSITORY, digest, tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == data and properties.size == SIZE
    assert offline.iterate(REPOSITORY, digest) == data
    assert offline.properties(REPOSITORY, digest).size == SIZE
    assert offline.exists(REPOSITORY, digest)
    missing = registry.push(REPOSITORY, os.urandom(1000))
    with pytest.raises(CacheMissError) as raised:
        offline.to_file(REPOSITORY, missing, tmp_path / "c")
    assert raised.value.digest == missing and raised.value.cache_dir == str(cache_dir)
    with pytest.raises(CacheMissError):
        offline.iterate(REPOSITORY, missing)
    with pytest.raises(CacheMissError):
        offline.exists(REPOSITORY, missing)
    assert not (tmp_path / "c").exists()
    # The environment turns both on, for clients that name neither.
    monkeypatch.setenv(CACHE_DIR_ENV, str(cache_dir))
    monkeypatch.setenv(OFFLINE_ENV, "1")
    assert Driver(mode, proxied.url).iterate(REPOSITORY, digest) == data
    with pytest.raises(CacheMissError):
        Driver(mode, proxied.url).to_file(REPOSITORY, missing, tmp_path / "c")
    assert proxied.requests == []


@pytest.mark.parametrize("mode", MODES)
def test_editing_a_target_leaves_the_entry_intact(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path, mode: str
) -> None:
    digest, data = blob
    cache_dir = tmp_path / "cache"
    driver = Driver(mode, proxied.url, cache_dir=cache_dir)
    targets = [tmp_path / "first.bin", tmp_path / "second.bin"]
    for target in targets:
        driver.to_file(REPOSITORY, digest, target)
    with targets[0].open("r+b") as file:
        file.write(b"edited")
    targets[1].write_bytes(b"rewritten")
    entry = entry_of(cache_dir, digest)
    assert hashlib.sha256(entry.read_bytes()).hexdigest() == parse_digest(digest).hex
    assert BlobCache(cache_dir).verify() == []
    third = tmp_path / "third.bin"
    driver.to_file(REPOSITORY, digest, third)
    assert third.read_bytes() == data
    assert blob_gets(proxied) == 1


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (root only), unmounted at the end."""
    if os.geteuid() != 0:
        skip_or_fail("mounting a tmpfs needs root")
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def remount_read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


@pytest.mark.parametrize("mode", MODES)
def test_a_read_only_cache_folder_does_not_fail_a_download(
    proxied: FaultProxy,
    blob: tuple[str, bytes],
    registry: Deployment,
    tmp_path: Path,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    digest, data = blob
    other_data = os.urandom(1000)
    other = registry.push(REPOSITORY, other_data)
    with tmpfs(tmp_path / "cache", "16m") as cache_dir:
        driver = Driver(mode, proxied.url, cache_dir=cache_dir)
        driver.to_file(REPOSITORY, digest, tmp_path / "cached.bin")
        remount_read_only(cache_dir)
        proxied.clear()
        with caplog.at_level(logging.WARNING, logger="acr_blob"):
            driver.to_file(REPOSITORY, other, tmp_path / "other.bin")
            assert driver.iterate(REPOSITORY, other) == other_data
        assert (tmp_path / "other.bin").read_bytes() == other_data
        assert blob_gets(proxied) == 2  # downloaded, as if there were no cache
        assert [r.message for r in caplog.records if "not caching" in r.message]
        assert "Read-only file system" in caplog.text
        # Its entries are still there to read.
        driver.to_file(REPOSITORY, digest, tmp_path / "hit.bin")
        assert (tmp_path / "hit.bin").read_bytes() == data
        assert blob_gets(proxied) == 2


@pytest.mark.parametrize("mode", MODES)
def test_a_full_cache_folder_does_not_fail_a_download(
    proxied: FaultProxy,
    blob: tuple[str, bytes],
    tmp_path: Path,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    digest, data = blob
    with tmpfs(tmp_path / "cache", "1m") as cache_dir:
        driver = Driver(mode, proxied.url, cache_dir=cache_dir)
        with caplog.at_level(logging.WARNING, logger="acr_blob"):
            properties = driver.to_file(REPOSITORY, digest, tmp_path / "layer.bin")
        assert properties.size == SIZE
        assert (tmp_path / "layer.bin").read_bytes() == data
        assert "no room" in caplog.text
        # Nothing half-written is left in the cache to take its room.
        left = [p for p in cache_dir.rglob("*") if p.is_file() and p.name != "oci-layout"]
        assert left == []


@pytest.mark.parametrize("mode", MODES)
def test_max_cache_bytes_evicts_the_least_recently_used(
    proxied: FaultProxy, registry: Deployment, tmp_path: Path, mode: str
) -> None:
    size = 1024 * 1024
    digests = [registry.push(REPOSITORY, os.urandom(size)) for _ in range(3)]
    first, second, third = digests
    cache_dir = tmp_path / "cache"
    driver = Driver(mode, proxied.url, cache_dir=cache_dir, max_cache_bytes=int(2.5 * size))
    driver.to_file(REPOSITORY, first, tmp_path / "1")
    driver.to_file(REPOSITORY, second, tmp_path / "2")
    # The first is the older, until it is used again: then the second is the least recently
    # used.
    os.utime(entry_of(cache_dir, first), (1_000_000, 1_000_000))
    os.utime(entry_of(cache_dir, second), (2_000_000, 2_000_000))
    driver.to_file(REPOSITORY, first, tmp_path / "1b")
    driver.to_file(REPOSITORY, third, tmp_path / "3")
    kept = sorted(entry.digest for entry in BlobCache(cache_dir).entries())
    assert kept == sorted([first, third])
    assert blob_gets(proxied) == 3
    # A blob larger than the bound is still downloaded and placed; it was in use while the
    # others were evicted, and is the next eviction's.
    small = Driver(mode, proxied.url, cache_dir=cache_dir, max_cache_bytes=size // 2)
    assert small.to_file(REPOSITORY, second, tmp_path / "2b").size == size
    assert [entry.digest for entry in BlobCache(cache_dir).entries()] == [second]
    assert [entry.digest for entry in BlobCache(cache_dir, size // 2).prune()] == [second]


def test_eviction_skips_an_entry_being_read(tmp_path: Path) -> None:
    data = os.urandom(1000)
    digest = parse_digest("sha256:" + hashlib.sha256(data).hexdigest())
    cache = BlobCache(tmp_path / "cache")
    path = cache.prepare(digest)
    path.write_bytes(data)
    os.utime(path, (1_000_000, 1_000_000))
    held = cache.open(digest)
    assert held is not None
    # Opened is used (whatever the mount's atime rules): eviction orders by it.
    assert path.stat().st_atime > 1_000_000 and path.stat().st_mtime == 1_000_000
    with held:
        assert cache.prune(0) == []
        assert path.exists()
        assert b"".join(held.chunks()) == data
    assert [entry.digest for entry in cache.prune(0)] == [str(digest)]
    assert not path.exists()


def test_a_link_in_the_cache_is_not_followed(tmp_path: Path) -> None:
    data = b"secret"
    outside = tmp_path / "outside"
    outside.write_bytes(data)
    digest = parse_digest("sha256:" + hashlib.sha256(data).hexdigest())
    cache = BlobCache(tmp_path / "cache")
    entry = cache.prepare(digest)
    entry.symlink_to(outside)
    assert cache.open(digest) is None
    assert cache.entries() == []
    (tmp_path / "cache" / "blobs" / "sha512").symlink_to(tmp_path)
    with pytest.raises(NotADirectoryError):
        cache.prepare(parse_digest("sha512:" + hashlib.sha512(data).hexdigest()))


def test_max_cache_bytes_is_checked() -> None:
    with pytest.raises(ValueError, match="max_cache_bytes"):
        BlobCache("/nonexistent", -1)


@pytest.mark.parametrize("mode", MODES)
def test_skopeo_reads_the_cache_as_an_oci_layout(
    skopeo_path: str, proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path, mode: str
) -> None:
    from tests.test_testbed import run_skopeo

    digest, data = blob
    cache_dir = tmp_path / "cache"
    Driver(mode, proxied.url, cache_dir=cache_dir).to_file(REPOSITORY, digest, tmp_path / "a")
    # The cache holds the blobs; an index that names them is all skopeo needs besides.
    write_oci_index(cache_dir, [(digest, SIZE)], tag="cached")
    out = tmp_path / "out"
    copied = run_skopeo(skopeo_path, "copy", f"oci:{cache_dir}:cached", f"dir:{out}")
    assert copied.returncode == 0, copied.stderr
    assert (out / parse_digest(digest).hex).read_bytes() == data
    # The manifest and config are blobs too, and as entries they verify.
    assert len(BlobCache(cache_dir).entries()) == 3
    assert BlobCache(cache_dir).verify() == []


def test_cache_dir_false_turns_the_environments_cache_off(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest, _ = blob
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    Driver("sync", proxied.url, cache_dir=False).to_file(REPOSITORY, digest, tmp_path / "a")
    assert not (tmp_path / "cache").exists()
    Driver("sync", proxied.url).to_file(REPOSITORY, digest, tmp_path / "b")
    assert entry_of(tmp_path / "cache", digest).exists()


def test_verify_reports_a_bad_entry_being_read_and_keeps_the_order_of_use(
    tmp_path: Path,
) -> None:
    good, bad = b"good", b"bad"
    cache = BlobCache(tmp_path / "cache")
    digests = [parse_digest("sha256:" + hashlib.sha256(d).hexdigest()) for d in (good, bad)]
    for digest, data in zip(digests, (good, b"not what it says"), strict=True):
        path = cache.prepare(digest)
        path.write_bytes(data)
        os.utime(path, (1_000_000, 1_000_000))
    held = cache.open(digests[1])
    assert held is not None
    with held:
        assert [entry.digest for entry in cache.verify()] == [str(digests[1])]
        assert entry_of(tmp_path / "cache", str(digests[1])).exists()  # in use: kept
    assert next(entry.last_used for entry in cache.entries()) == 1_000_000
    assert [entry.digest for entry in cache.verify()] == [str(digests[1])]
    assert [entry.digest for entry in cache.entries()] == [str(digests[0])]


@contextlib.contextmanager
def xfs_with_reflinks(path: Path) -> Iterator[Path]:
    """An XFS file system with reflinks, on a loop device, mounted at ``path`` (root only)."""
    if os.geteuid() != 0:
        skip_or_fail("mounting a loop device needs root")
    image = path.with_suffix(".img")
    with image.open("wb") as file:
        file.truncate(320 << 20)  # sparse: XFS wants 300 MiB at least
    made = subprocess.run(
        ["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], capture_output=True, text=True
    )
    if made.returncode != 0:
        skip_or_fail(f"cannot make an XFS file system: {made.stderr.strip()}")
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-o", "loop", str(image), str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        skip_or_fail(f"cannot mount a loop device here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)
        image.unlink()


def shares_extents(path: Path) -> bool:
    shown = subprocess.run(["filefrag", "-v", str(path)], capture_output=True, text=True)
    return shown.returncode == 0 and "shared" in shown.stdout


@pytest.mark.parametrize("mode", MODES)
def test_a_hit_on_a_reflink_file_system_is_a_reflink_and_stays_apart(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path, mode: str
) -> None:
    digest, data = blob
    with xfs_with_reflinks(tmp_path / "xfs") as disk:
        driver = Driver(mode, proxied.url, cache_dir=disk / "cache")
        driver.to_file(REPOSITORY, digest, disk / "first.bin")
        entry = entry_of(disk / "cache", digest)
        target = disk / "second.bin"
        driver.to_file(REPOSITORY, digest, target)
        assert blob_gets(proxied) == 1
        # The hit cost no copy: the target shares the entry's blocks (FICLONE, or
        # copy_file_range, which XFS turns into a reflink too; a plain copy fails this)...
        assert shares_extents(target) and shares_extents(entry)
        assert target.stat().st_ino != entry.stat().st_ino
        # ...until it is written, when it gets blocks of its own.
        with target.open("r+b") as file:
            file.write(b"edited")
        assert entry.read_bytes() == data
        assert target.read_bytes()[6:] == data[6:]
