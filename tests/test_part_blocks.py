"""Parallel parts to a file: each part received into a buffer of its own, written in place in
whole blocks through O_DIRECT, and read back for the hash the same way, a read ahead. Unit tests
on PartialFile's part writes and read-back; the real registry for the whole path; the
filesystem's refusals injected, for no filesystem here refuses O_DIRECT."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from pathlib import Path

import pytest

from acr_blob import _direct_io
from acr_blob._direct_io import ALIGNMENT, READ_BACK_SIZE, PartBuffer
from acr_blob._files import PartialFile
from acr_blob.references import parse_digest
from tests.conftest import skip_or_fail
from tests.drivers import Driver
from tools.testbed import Deployment

# Three parts' worth of the blob, so that four connections fetch them side by side.
BLOB_SIZE = 3 * (8 << 20) + 12345
SMALL_BUFFER = 3 * ALIGNMENT


@pytest.fixture(scope="module")
def blob(registry: Deployment) -> tuple[str, bytes]:
    pushed = registry.push_random("blocks/blob", BLOB_SIZE)
    return pushed.digest, pushed.data


@pytest.fixture
def o_direct_here(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.touch()
    fd = os.open(probe, os.O_RDWR)
    try:
        blocks = _direct_io.open_block_file(fd)
        if blocks is None:
            skip_or_fail("the temporary folder's filesystem refuses O_DIRECT")
        else:
            blocks.close()
    finally:
        os.close(fd)
        probe.unlink()


def _partial(tmp_path: Path, data: bytes) -> PartialFile:
    digest = parse_digest("sha256:" + hashlib.sha256(data).hexdigest())
    return PartialFile(tmp_path / "blob", digest, shared=False)


def _write_part(partial: PartialFile, data: bytes, offset: int, *, lend: bool) -> None:
    """Write ``data`` at ``offset`` as a part worker does: into the buffer (received into its
    lent views, or copied in), written whenever it is full, and at the end."""
    buffer = PartBuffer(offset, SMALL_BUFFER)
    view = memoryview(data)
    while view:
        if lend:
            target = buffer.lend(70_001)
            count = min(len(target), len(view))
            target[:count] = view[:count]
            rest = buffer.write(target[:count])
            view = view[count:]
        else:
            rest, view = buffer.write(view[:70_001]), view[70_001:]
        while buffer.full:
            partial.write_part(buffer)
            buffer.written()
            rest = buffer.write(rest)
    if buffer.pending:
        partial.write_part(buffer)
        buffer.written()
    assert buffer.offset == offset + len(data)


@pytest.mark.usefixtures("o_direct_here")
@pytest.mark.parametrize("offset", [0, 1, ALIGNMENT - 1, ALIGNMENT, 5000])
@pytest.mark.parametrize("length", [1, ALIGNMENT, SMALL_BUFFER + 17, 2 * READ_BACK_SIZE + 5])
@pytest.mark.parametrize("lend", [False, True], ids=["copied", "lent"])
def test_a_part_is_written_in_place_and_read_back_whole(
    tmp_path: Path, offset: int, length: int, lend: bool
) -> None:
    before = os.urandom(offset)
    data = os.urandom(length)
    after = os.urandom(4321)
    with _partial(tmp_path, before + data + after) as partial:
        # The neighbours' bytes first, as other parts would write them (ordinary writes).
        partial.write_at([before], 0)
        partial.write_at([after], offset + length)
        _write_part(partial, data, offset, lend=lend)
        read = b"".join(bytes(view) for view in partial.read_back(offset, offset + length))
        whole = b"".join(bytes(view) for view in partial.read_back(0, offset + length + 4321))
    assert read == data
    assert whole == before + data + after


@pytest.mark.usefixtures("o_direct_here")
def test_part_writes_bypass_the_page_cache_in_whole_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = ordinary = 0
    real_pwrite = os.pwrite

    def count(fd: int, data: memoryview, offset: int) -> int:
        nonlocal direct, ordinary
        written = real_pwrite(fd, data, offset)
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            assert offset % ALIGNMENT == 0 and written % ALIGNMENT == 0
            direct += written
        else:
            ordinary += written
        return written

    monkeypatch.setattr(_direct_io.os, "pwrite", count)
    data = os.urandom(10 * SMALL_BUFFER)
    with _partial(tmp_path, data) as partial:
        _write_part(partial, data, 1000, lend=True)
    # All but the unaligned head (up to the first block's end) of each buffer's worth.
    assert ordinary < 10 * ALIGNMENT
    assert direct + ordinary == len(data)


@pytest.mark.usefixtures("o_direct_here")
def test_o_direct_refused_at_the_first_write_and_read_means_ordinary_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused: list[str] = []
    real_pwrite, real_preadv = os.pwrite, os.preadv

    def refuse_write(fd: int, data: memoryview, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append("write")
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    def refuse_read(fd: int, buffers: list[memoryview], offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append("read")
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(_direct_io.os, "pwrite", refuse_write)
    monkeypatch.setattr(_direct_io.os, "preadv", refuse_read)
    data = os.urandom(2 * READ_BACK_SIZE + 3 * SMALL_BUFFER)
    with _partial(tmp_path, data) as partial:
        _write_part(partial, data, 0, lend=False)
        read = b"".join(bytes(view) for view in partial.read_back(0, len(data)))
    assert read == data
    assert refused == ["write", "read"], "after a refusal, every write and read is ordinary"


@pytest.mark.usefixtures("o_direct_here")
def test_a_failed_or_abandoned_read_back_leaves_the_next_one_true(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_preadv = os.preadv
    failing = True

    def fail_once(fd: int, buffers: list[memoryview], offset: int) -> int:
        nonlocal failing
        if failing and offset >= READ_BACK_SIZE:
            failing = False
            raise OSError(errno.EIO, "Input/output error")
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(_direct_io.os, "preadv", fail_once)
    data = os.urandom(3 * READ_BACK_SIZE)
    with _partial(tmp_path, data) as partial:
        _write_part(partial, data, 0, lend=False)
        with pytest.raises(OSError, match="Input/output"):
            for _ in partial.read_back(0, len(data)):
                pass
        # Nor does a read under way when its caller stopped early answer the next call.
        early = partial.read_back(0, len(data))
        assert bytes(next(early)) == data[:READ_BACK_SIZE]
        early.close()
        read = b"".join(bytes(view) for view in partial.read_back(5, len(data)))
    assert read == data[5:]


def test_o_direct_refused_at_open_means_ordinary_writes_and_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def refuse_direct(path: object, flags: int, *args: object) -> int:
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(_direct_io.os, "open", refuse_direct)
    data = os.urandom(READ_BACK_SIZE + 3 * SMALL_BUFFER + 1)
    with _partial(tmp_path, data) as partial:
        _write_part(partial, data, 7, lend=True)
        read = b"".join(bytes(view) for view in partial.read_back(7, 7 + len(data)))
    assert read == data


@pytest.mark.usefixtures("o_direct_here")
def test_parallel_parts_receive_straight_into_their_buffers(
    mode: str,
    registry: Deployment,
    blob: tuple[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lent = copied = 0
    real_write = PartBuffer.write

    def write(buffer: PartBuffer, data: bytes | memoryview) -> memoryview:
        nonlocal lent, copied
        if isinstance(data, memoryview) and data.obj is buffer.lend(1).obj:
            lent += len(data)
        else:
            copied += len(data)
        return real_write(buffer, data)

    monkeypatch.setattr(PartBuffer, "write", write)
    digest, data = blob
    client = Driver(mode, registry.url)
    client.to_file("blocks/blob", digest, tmp_path / "blob", max_concurrency=4)
    assert (tmp_path / "blob").read_bytes() == data
    # Only what each answer's headers came with is copied (h11's buffer; for async, what anyio
    # had queued before the socket was taken): a few KiB per part.
    assert copied < 1 << 20
    assert lent + copied == BLOB_SIZE
