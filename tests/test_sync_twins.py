"""The sync client is tools/unasync.py's output from the async one, and CI notices when not."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import acr_blob
from tools import unasync

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "overlay" / "acr_blob"


def _copy_project(destination: Path) -> Path:
    """The parts of the project check-sync reads, in a folder of their own."""
    for folder in ("_async", "_sync"):
        shutil.copytree(
            PACKAGE / folder,
            destination / "overlay" / "acr_blob" / folder,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    return destination


def _check_sync(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "check-sync", f"SYNC_ROOT={root}"],
        capture_output=True,
        text=True,
        check=False,
    )


def test_make_check_sync_fails_when_a_generated_file_is_edited(tmp_path: Path) -> None:
    copy = _copy_project(tmp_path)
    assert _check_sync(copy).returncode == 0
    client = copy / "overlay" / "acr_blob" / "_sync" / "client.py"
    client.write_text(
        client.read_text().replace("max_redirects: int = 10", "max_redirects: int = 3")
    )
    edited = _check_sync(copy)
    assert edited.returncode != 0
    assert "overlay/acr_blob/_sync/client.py" in edited.stderr


def test_make_check_sync_fails_when_a_twin_is_missing_or_extra(tmp_path: Path) -> None:
    copy = _copy_project(tmp_path)
    (copy / "overlay" / "acr_blob" / "_sync" / "ranged.py").unlink()
    (copy / "overlay" / "acr_blob" / "_sync" / "extra.py").write_text("")
    failed = _check_sync(copy)
    assert failed.returncode != 0
    assert "_sync/ranged.py" in failed.stderr and "_sync/extra.py" in failed.stderr


def test_every_generated_file_names_its_source_and_says_do_not_edit() -> None:
    sources = sorted(path.name for path in (PACKAGE / "_async").glob("*.py"))
    twins = sorted(path.name for path in (PACKAGE / "_sync").glob("*.py"))
    assert twins == sources
    for name in twins:
        first = (PACKAGE / "_sync" / name).read_text().splitlines()[0]
        assert first == f"# Generated from acr_blob/_async/{name} by tools/unasync.py: do not edit."


def test_the_substitutions_make_sync_code() -> None:
    source = (
        "async def f(download: AsyncBlobDownload) -> AsyncIterator[bytes]:\n"
        "    async with download:\n"
        "        async for chunk in abody_chunks(await download.open()):\n"
        "            await arun_blocking(write, chunk)\n"
        "    await download.aclose()\n"
    )
    assert unasync.unasync(source) == (
        "def f(download: BlobDownload) -> Iterator[bytes]:\n"
        "    with download:\n"
        "        for chunk in body_chunks(download.open()):\n"
        "            run_blocking(write, chunk)\n"
        "    download.close()\n"
    )


def test_the_public_sync_client_is_the_generated_one() -> None:
    assert acr_blob.BlobClient.__module__ == "acr_blob._sync.client"
    assert acr_blob.BlobDownload.__module__ == "acr_blob._sync.download"
    assert acr_blob.AsyncBlobClient.__module__ == "acr_blob._async.client"
