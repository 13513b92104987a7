"""One benchmark case in a fresh interpreter: `PYTHON -P worker.py REQUEST_JSON`.

Run by tools/bench/run.py, in the project's venv or in the peers' (.compare/venv), so this
module imports only the standard library at the top; each case imports its client inside its
`prepare` function. The sequence, all in this process:

1. the case's imports and its client (untimed), then the peak RSS so far;
2. the download itself, timed with `time.perf_counter()`, then the peak RSS again;
3. checks that the client got the right bytes (untimed): the byte count always, and a sha256
   of the output file for the cases that write one;
4. one JSON line on the original standard output:
   {"ok", "error", "seconds", "bytes", "rss_after_imports_kib", "rss_end_kib",
    "ru_maxrss_kib", "checked", "versions", "started_at", "ended_at"}, and for the SDK's
   cases, on request, "trace" (`[time.monotonic(), bytes]` from the `progress=` callback) and,
   under `max_concurrency="auto"`, "auto_log" (`[time.monotonic(), message]` of the
   controller's `auto:` DEBUG lines on the `acr_blob` logger). `started_at` and `ended_at`
   bracket the download call on the same clock: `time.monotonic()` is the system's, so the
   orchestrator can put these instants beside its own (its proxy's).

Peak RSS is the kernel's high-water mark of this process's own memory (`VmHWM` in
/proc/self/status). `ru_maxrss` is not used for the difference because Linux carries the
parent's peak over into a child across exec (Python starts children with vfork), so in a child
it starts at the orchestrator's peak; it is still reported, as `ru_maxrss_kib`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import resource
import shutil
import ssl
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
ERROR_LIMIT = 600


@dataclass(frozen=True)
class Request:
    kind: str
    url: str  # the registry, http://127.0.0.1:PORT (or the throttling proxy in front of it)
    repository: str
    digest: str
    size: int
    output_dir: Path
    options: dict[str, Any]
    ca_cert: str | None = None  # the https registry's self-signed certificate, for TLS cases

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, for the clients that take a host name instead of a URL."""
        return self.url.split("://", 1)[1].rstrip("/")

    @property
    def blob_url(self) -> str:
        return f"{self.url}/v2/{self.repository}/blobs/{self.digest}"

    @classmethod
    def parse(cls, text: str) -> Request:
        raw = json.loads(text)
        return cls(
            kind=str(raw["kind"]),
            url=str(raw["url"]).rstrip("/"),
            repository=str(raw["repository"]),
            digest=str(raw["digest"]),
            size=int(raw["size"]),
            output_dir=Path(str(raw["output_dir"])),
            options=dict(raw.get("options") or {}),
            ca_cert=None if raw.get("ca_cert") is None else str(raw["ca_cert"]),
        )

    def verify(self) -> ssl.SSLContext | bool:
        """What httpx takes as ``verify=`` for this registry."""
        return True if self.ca_cert is None else ssl.create_default_context(cafile=self.ca_cert)


class _AutoLines(logging.Handler):
    """Keeps the ``max_concurrency="auto"`` controller's decisions, stamped on arrival."""

    def __init__(self, lines: list[tuple[float, str]]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("auto:"):
            # record.created is wall-clock time; the orchestrator compares monotonic instants.
            self.lines.append((time.monotonic(), message))


@dataclass
class Observations:
    """What an SDK case records as it downloads, besides its time (see the module's doc)."""

    trace: list[tuple[float, int]] | None = None
    auto_log: list[tuple[float, str]] | None = None

    @classmethod
    def start(cls, request: Request) -> Observations:
        observations = cls()
        if request.options.get("trace"):
            observations.trace = []
        if request.options.get("max_concurrency") == "auto":
            observations.auto_log = []
            logger = logging.getLogger("acr_blob")
            logger.setLevel(logging.DEBUG)
            logger.addHandler(_AutoLines(observations.auto_log))
        return observations

    def progress(self, done: int, total: int | None) -> None:
        if self.trace is not None:
            self.trace.append((time.monotonic(), done))

    def download_options(self, request: Request) -> dict[str, Any]:
        """The keywords of the SDK's download call: its max_concurrency, and the progress
        callback when a trace is asked for."""
        # Any: the keyword exists only in SDK versions that download in parallel ranges.
        extra: dict[str, Any] = {}
        concurrency = request.options.get("max_concurrency")
        if concurrency is not None:
            extra["max_concurrency"] = concurrency if concurrency == "auto" else int(concurrency)
        if self.trace is not None:
            extra["progress"] = self.progress
        return extra

    def report(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if self.trace is not None:
            found["trace"] = self.trace
        if self.auto_log is not None:
            found["auto_log"] = self.auto_log
        return found


@dataclass
class Prepared:
    """A case ready to run: `download` returns the number of bytes the client handed over."""

    download: Callable[[], int]
    checked: str  # how the bytes are known to be right
    versions: dict[str, str]
    check: Callable[[], None] | None = None  # after timing; raises if the bytes were wrong
    closers: list[Callable[[], object]] = field(default_factory=list)
    observations: Observations | None = None


class WrongBytes(AssertionError):
    """The case's output is not the blob."""


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def peak_rss_kib() -> int:
    """This process's own peak resident set size, in KiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return ru_maxrss_kib()


def ru_maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            hasher.update(chunk)
    return f"sha256:{hasher.hexdigest()}"


def file_check(path: Path, digest: str) -> Callable[[], None]:
    def check() -> None:
        got = sha256_file(path)
        if got != digest:
            raise WrongBytes(f"{path.name} hashes to {got}, expected {digest}")

    return check


# --- the cases ------------------------------------------------------------------------------


def prepare_hash_limit(request: Request) -> Prepared:
    block = os.urandom(CHUNK)

    def download() -> int:
        hasher = hashlib.sha256()
        full, rest = divmod(request.size, CHUNK)
        for _ in range(full):
            hasher.update(block)
        if rest:
            hasher.update(memoryview(block)[:rest])
        hasher.hexdigest()
        return request.size

    return Prepared(download, "no download: sha256 of as many bytes in memory, 1 MiB updates", {})


def prepare_requests(request: Request) -> Prepared:
    return _requests_case(request, None)


def prepare_requests_file(request: Request) -> Prepared:
    """The baseline's loop, writing each chunk to a file and fsyncing it at the end: the same
    work as a download to a file, done plainly (no partial file, no rename)."""
    return _requests_case(request, request.output_dir / "blob")


def _requests_case(request: Request, target: Path | None) -> Prepared:
    import requests  # type: ignore[import-untyped,import-not-found,unused-ignore]

    session = requests.Session()
    # Per request: requests lets REQUESTS_CA_BUNDLE override a session's own verify.
    verify: str | bool = True if request.ca_cert is None else request.ca_cert

    def download() -> int:
        hasher = hashlib.sha256()
        received = 0
        with contextlib.ExitStack() as stack:
            response = stack.enter_context(
                session.get(request.blob_url, stream=True, verify=verify)
            )
            response.raise_for_status()
            out = stack.enter_context(open(target, "wb")) if target is not None else None
            for chunk in response.iter_content(CHUNK):
                hasher.update(chunk)
                if out is not None:
                    out.write(chunk)
                received += len(chunk)
            if out is not None:
                out.flush()
                os.fsync(out.fileno())
        got = f"sha256:{hasher.hexdigest()}"
        if got != request.digest:
            raise WrongBytes(f"body hashes to {got}, expected {request.digest}")
        return received

    checked = "verified by the case (sha256, 1 MiB chunks)"
    if target is None:
        check = None
    else:
        checked += "; written to a file, fsync included"
        check = file_check(target, request.digest)
    return Prepared(
        download,
        checked,
        {"requests": version("requests"), "urllib3": version("urllib3")},
        check=check,
        closers=[session.close],
    )


def prepare_socket(request: Request) -> Prepared:
    return _socket_case(request, None)


def prepare_socket_file(request: Request) -> Prepared:
    return _socket_case(request, request.output_dir / "blob")


def _socket_case(request: Request, target: Path | None) -> Prepared:
    """The most a plain verified download in Python gets on this machine, to read the SDK's
    rows against: one http.client request, the body received straight into a buffer (``readinto``:
    the kernel's copy only) 2 MiB at a time and hashed. With a target, the body is received into
    the SDK's own ``O_DIRECT`` buffers and written by its writer thread, then fsynced, as the
    SDK does. No retries, redirects, resumption or partial file: what the SDK's layers cost is
    the difference between the rows."""
    import http.client
    from urllib.parse import urlsplit

    from acr_blob._direct_io import DirectAppender

    url = urlsplit(request.blob_url)

    def receive(response: http.client.HTTPResponse, size: int, hasher: Any) -> int:
        received = 0
        if target is None:
            buffer = memoryview(bytearray(2 * CHUNK))
            while received < size and (count := response.readinto(buffer)):
                hasher.update(buffer[:count])
                received += count
            return received
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.posix_fallocate(fd, 0, size)
            appender = DirectAppender(fd, 0)
            try:
                while received < size:
                    view = appender.lend(size - received)
                    count = response.readinto(view)
                    if not count:
                        break
                    hasher.update(view[:count])
                    appender.write(view[:count])
                    received += count
            finally:
                appender.close()
            os.fsync(fd)
        finally:
            os.close(fd)
        return received

    def download() -> int:
        connection = http.client.HTTPConnection(url.hostname or "", url.port)
        try:
            connection.request("GET", url.path)
            response = connection.getresponse()
            if response.status != 200:
                raise WrongBytes(f"the registry answered {response.status}, not 200")
            hasher = hashlib.sha256()
            received = receive(response, int(response.getheader("Content-Length", "0")), hasher)
        finally:
            connection.close()
        got = f"sha256:{hasher.hexdigest()}"
        if got != request.digest:
            raise WrongBytes(f"body hashes to {got}, expected {request.digest}")
        return received

    checked = "no SDK: http.client readinto 2 MiB + hashlib, the most a plain loop gets"
    if target is not None:
        checked = (
            "no SDK but its O_DIRECT writer: http.client readinto its buffers + hashlib, "
            "fsync included"
        )
    return Prepared(
        download,
        checked,
        {},
        check=None if target is None else file_check(target, request.digest),
    )


def _acr_versions() -> dict[str, str]:
    return {"acr-blob": version("acr-blob"), "httpx": version("httpx")}


def prepare_acr_blob_stream(request: Request) -> Prepared:
    from acr_blob import BlobClient

    client = BlobClient(request.url, verify=request.verify(), **_one_stream(BlobClient))
    observations = Observations.start(request)
    extra = observations.download_options(request)

    def download() -> int:
        received = 0
        with client.download_blob(request.repository, request.digest, **extra) as blob:
            for chunk in blob:
                received += len(chunk)
        return received

    return Prepared(
        download,
        "verified by the SDK",
        _acr_versions(),
        closers=[client.close],
        observations=observations,
    )


def prepare_acr_blob_file(request: Request) -> Prepared:
    from acr_blob import BlobClient

    client = BlobClient(request.url, verify=request.verify(), **_one_stream(BlobClient))
    target = request.output_dir / "blob"
    observations = Observations.start(request)
    extra = observations.download_options(request)

    def download() -> int:
        client.download_blob_to_file(request.repository, request.digest, target, **extra)
        return target.stat().st_size

    return Prepared(
        download,
        "verified by the SDK; file hashed again after timing; timing includes fsync + rename",
        _acr_versions(),
        check=file_check(target, request.digest),
        closers=[client.close],
        observations=observations,
    )


def _one_stream(client_class: type) -> dict[str, Any]:
    """The client's setting for the rows without a max_concurrency: one stream (N=1), whatever
    the SDK's default; nothing for an SDK without the setting."""
    import inspect

    return (
        {"max_concurrency": 1}
        if "max_concurrency" in inspect.signature(client_class).parameters
        else {}
    )


def prepare_acr_blob_async(request: Request) -> Prepared:
    from acr_blob import AsyncBlobClient

    loop = asyncio.new_event_loop()

    async def make() -> AsyncBlobClient:
        return AsyncBlobClient(request.url, verify=request.verify(), **_one_stream(AsyncBlobClient))

    client = loop.run_until_complete(make())

    async def fetch() -> int:
        received = 0
        async with await client.download_blob(request.repository, request.digest) as blob:
            async for chunk in blob:
                received += len(chunk)
        return received

    def close() -> None:
        loop.run_until_complete(client.aclose())
        loop.close()

    return Prepared(
        lambda: loop.run_until_complete(fetch()),
        "verified by the SDK",
        _acr_versions(),
        closers=[close],
    )


def prepare_acr_blob_async_file(request: Request) -> Prepared:
    from acr_blob import AsyncBlobClient

    loop = asyncio.new_event_loop()

    async def make() -> AsyncBlobClient:
        return AsyncBlobClient(request.url, verify=request.verify(), **_one_stream(AsyncBlobClient))

    client = loop.run_until_complete(make())
    target = request.output_dir / "blob"

    async def fetch() -> int:
        await client.download_blob_to_file(request.repository, request.digest, target)
        return target.stat().st_size

    def close() -> None:
        loop.run_until_complete(client.aclose())
        loop.close()

    return Prepared(
        lambda: loop.run_until_complete(fetch()),
        "verified by the SDK; file hashed again after timing; timing includes fsync + rename",
        _acr_versions(),
        check=file_check(target, request.digest),
        closers=[close],
    )


def _cache_entry(request: Request) -> tuple[Path, Path]:
    """The blob cache the orchestrator filled, and the blob's entry file in it."""
    if not request.options.get("cache_dir"):
        raise ValueError(f"case kind {request.kind!r} needs options.cache_dir")
    cache_dir = Path(str(request.options["cache_dir"]))
    algorithm, _, hex_digest = request.digest.partition(":")
    entry = cache_dir / "blobs" / algorithm / hex_digest
    if not entry.is_file():
        raise FileNotFoundError(f"the cache {cache_dir} has no entry for {request.digest}")
    return cache_dir, entry


def prepare_copy_entry(request: Request) -> Prepared:
    """The disk's own copy speed, the cache hit's baseline: the entry file copied to a new
    file beside the target by ``shutil.copyfile`` (sendfile, in the kernel), then fsynced, as
    the SDK fsyncs what it places."""
    _, entry = _cache_entry(request)
    target = request.output_dir / "blob"

    def download() -> int:
        shutil.copyfile(entry, target)
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return target.stat().st_size

    return Prepared(
        download,
        "no SDK: shutil.copyfile of the cache entry + fsync; file hashed after timing",
        {},
        check=file_check(target, request.digest),
    )


def prepare_acr_blob_cache_hit(request: Request) -> Prepared:
    from acr_blob import BlobClient

    cache_dir, _ = _cache_entry(request)
    # offline: a miss would raise CacheMissError rather than time a download.
    client = BlobClient(request.url, verify=request.verify(), cache_dir=cache_dir, offline=True)
    target = request.output_dir / "blob"

    def download() -> int:
        client.download_blob_to_file(request.repository, request.digest, target)
        return target.stat().st_size

    return Prepared(
        download,
        "from the cache entry, offline (no request); file hashed after timing; timing "
        "includes fsync + rename",
        _acr_versions(),
        check=file_check(target, request.digest),
        closers=[client.close],
    )


def prepare_azure(request: Request) -> Prepared:
    from azure.containerregistry import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        ContainerRegistryClient,
    )

    client = ContainerRegistryClient(request.url, None)

    def download() -> int:
        received = 0
        # enforce_https=False: the package refuses http registries otherwise.
        with client.download_blob(request.repository, request.digest, enforce_https=False) as s:
            for chunk in s:
                received += len(chunk)
        return received

    return Prepared(
        download,
        "verified by the client (sha256 at the end); 4 MiB Range requests",
        {"azure-containerregistry": version("azure-containerregistry")},
        closers=[client.close],
    )


def prepare_oras(request: Request) -> Prepared:
    import oras.provider  # type: ignore[import-untyped,import-not-found,unused-ignore]

    registry = oras.provider.Registry(hostname=request.host, insecure=True, auth_backend="basic")
    container = f"{request.host}/{request.repository}"
    target = request.output_dir / "blob"

    def download() -> int:
        registry.download_blob(container, request.digest, str(target))
        return target.stat().st_size

    return Prepared(
        download,
        "not verified by the client: file hashed by the bench after timing",
        {"oras": version("oras")},
        check=file_check(target, request.digest),
        closers=[registry.session.close],
    )


def prepare_dxf(request: Request) -> Prepared:
    import dxf  # type: ignore[import-untyped,import-not-found,unused-ignore]

    def auth(client: Any, response: Any) -> None:
        client.authenticate(response=response)

    # Any: python-dxf's annotations make pull_blob's result a Union with its (iter, size) form.
    client: Any = dxf.DXF(request.host, request.repository, auth, insecure=True)
    client.__enter__()

    def download() -> int:
        received = 0
        for chunk in client.pull_blob(request.digest):  # default chunk size (8 KiB)
            received += len(chunk)
        return received

    return Prepared(
        download,
        "verified by the client (sha256 at the end); 8 KiB chunks",
        {"python-dxf": version("python-dxf"), "requests": version("requests")},
        closers=[lambda: client.__exit__(None, None, None)],
    )


PREPARERS: dict[str, Callable[[Request], Prepared]] = {
    "hash-limit": prepare_hash_limit,
    "requests": prepare_requests,
    "requests-file": prepare_requests_file,
    "socket": prepare_socket,
    "socket-file": prepare_socket_file,
    "acr-blob-stream": prepare_acr_blob_stream,
    "acr-blob-file": prepare_acr_blob_file,
    "acr-blob-async": prepare_acr_blob_async,
    "acr-blob-async-file": prepare_acr_blob_async_file,
    "copy-entry": prepare_copy_entry,
    "acr-blob-cache-hit": prepare_acr_blob_cache_hit,
    "azure-containerregistry": prepare_azure,
    "oras-py": prepare_oras,
    "python-dxf": prepare_dxf,
}


# --- the run --------------------------------------------------------------------------------


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:ERROR_LIMIT]


def measure(request: Request) -> dict[str, Any]:
    result: dict[str, Any] = {"ok": False, "error": None, "kind": request.kind}
    prepared = PREPARERS[request.kind](request)
    result["versions"] = prepared.versions
    result["checked"] = prepared.checked
    try:
        result["rss_after_imports_kib"] = peak_rss_kib()
        result["started_at"] = time.monotonic()
        start = time.perf_counter()
        received = prepared.download()
        result["seconds"] = time.perf_counter() - start
        result["ended_at"] = time.monotonic()
        result["rss_end_kib"] = peak_rss_kib()
        result["ru_maxrss_kib"] = ru_maxrss_kib()
        result["bytes"] = received
        if received != request.size:
            raise WrongBytes(f"got {received} bytes, expected {request.size}")
        if prepared.check is not None:
            prepared.check()
        result["ok"] = True
    except Exception as error:
        traceback.print_exc()
        result["error"] = describe(error)
    finally:
        if prepared.observations is not None:
            result.update(prepared.observations.report())
        for close in reversed(prepared.closers):
            try:
                close()
            except Exception as error:  # a failing close must not hide the measurement
                print(f"bench worker: closing failed: {describe(error)}", file=sys.stderr)
    return result


def main(argv: list[str]) -> int:
    # Whatever the clients print goes to stderr; stdout carries only the result line.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        if len(argv) != 1:
            raise ValueError("usage: worker.py REQUEST_JSON")
        request = Request.parse(argv[0])
        if request.kind not in PREPARERS:
            raise ValueError(f"unknown case kind {request.kind!r}")
        result = measure(request)
    except Exception as error:
        traceback.print_exc()
        result = {"ok": False, "error": describe(error)}
    with os.fdopen(result_fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
