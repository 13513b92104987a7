"""The runner protocol's plumbing, shared by the peer runners in this folder (stdlib only).

A runner is run as `PYTHON tools/compare/runners/NAME.py < request.json > observation.json`
in a virtual env that holds its client. It reads the request, makes ONE client instance, has
it download the blob `downloads` times to `output_dir/blob-<i>`, and writes what it observed:

    {"client": "NAME VERSION", "unsupported": null | "why",
     "downloads": [{"ok": bool, "error": null | "Type: message", "elapsed": seconds}]}

The request also gives the blob's `size`, as a manifest would give it with the digest, for
clients whose fetch takes a whole descriptor (containerd's); the others ignore it. On the ACR
deployment it also gives `aad_token`, an AAD token the registry's `/oauth2/exchange` accepts,
for clients that take an AAD credential (`credentials` are then for the others, which ACR's
`/oauth2/token` takes as Basic auth); `token_auth` says whether the registry answers with a
Bearer challenge (the token protocol) rather than Basic. A parallel scenario gives
`max_concurrency`: a client without a way to fetch one blob over several connections reports
it unsupported (`no_parallel`).

A pull scenario's request also names `tag`, `pull` ("image": the `platform` image of the
tag, or "files": the artifact's titled layers as files) and `platform` ("os/arch"); its one
download is the pull into the folder `output_dir/pull-<i>` (`Request.destination`). A runner
that composes a pull from its client's get-manifest and download-blob calls writes there
what skopeo's `dir:` writes: each blob in a file named by its digest's hex, and (last) the
manifest as `manifest.json`, as the client handed it over.

`ok` means the client returned without raising: nothing here verifies, retries or hashes.
The exit status is 0 whatever the downloads did; it is non-zero only when the runner itself
failed (a bad request, a registry that is not on loopback, a bug).

Each download gets the request's `timeout` (seconds) to return: one still running then is
reported as failed with a `Timeout:` error, and the downloads after it, which cannot start
while the one client is stuck, with a `NotAttempted:` error; so the orchestrator always gets
an observation. The clients themselves run with their own defaults (no timeout is passed).
Anything the client prints on standard output goes to standard error, to keep the
observation clean.

Each runner script imports this module by its bare name (the script's folder is first on
`sys.path`); for mypy, which checks `tools/` as packages, it names it through the package.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import ipaddress
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit

ERROR_LIMIT = 300
_POLL_SECONDS = 0.05
DEFAULT_TIMEOUT = 60.0


class RequestError(ValueError):
    """The request cannot be run: malformed, or aimed at a host that is not loopback."""


@dataclass(frozen=True)
class Request:
    scenario: str
    registry: str
    repository: str
    digest: str
    credentials: tuple[str, str] | None
    ca_cert: str | None
    output_dir: Path
    downloads: int
    timeout: float
    tag: str | None = None
    pull: str | None = None
    platform: str | None = None
    size: int | None = None
    aad_token: str | None = None
    token_auth: bool = False
    max_concurrency: int | None = None

    @property
    def https(self) -> bool:
        return urlsplit(self.registry).scheme == "https"

    @property
    def host(self) -> str:
        """`host:port`, as clients that take a host name (not a URL) want it."""
        return urlsplit(self.registry).netloc

    def output(self, index: int) -> Path:
        return self.output_dir / f"blob-{index}"

    def destination(self, index: int) -> Path:
        """Where download `index` goes: the blob's file, or a pull's folder."""
        return self.output_dir / f"pull-{index}" if self.pull else self.output(index)

    def os_architecture(self) -> tuple[str, str]:
        """The `platform` a pull asks for, as (os, architecture)."""
        os_, _, architecture = (self.platform or "").partition("/")
        return os_, architecture.partition("/")[0]

    @classmethod
    def parse(cls, raw: Any) -> Request:
        if not isinstance(raw, dict):
            raise RequestError("the request is not a JSON object")
        try:
            registry = str(raw["registry"])
            credentials = raw.get("credentials")
            ca_cert = raw.get("ca_cert")
            timeout = raw.get("timeout")
            request = cls(
                scenario=str(raw.get("scenario", "")),
                registry=registry.rstrip("/"),
                repository=str(raw["repository"]),
                digest=str(raw["digest"]),
                credentials=(
                    None
                    if credentials is None
                    else (str(credentials["username"]), str(credentials["password"]))
                ),
                ca_cert=None if ca_cert is None else str(ca_cert),
                output_dir=Path(str(raw["output_dir"])),
                downloads=int(raw.get("downloads", 1)),
                timeout=DEFAULT_TIMEOUT if timeout is None else float(timeout),
                tag=_optional(raw, "tag"),
                pull=_optional(raw, "pull"),
                platform=_optional(raw, "platform"),
                size=None if raw.get("size") is None else int(raw["size"]),
                aad_token=_optional(raw, "aad_token"),
                token_auth=bool(raw.get("token_auth", False)),
                max_concurrency=(
                    None if raw.get("max_concurrency") is None else int(raw["max_concurrency"])
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RequestError(f"malformed request: {describe(exc)}") from exc
        check_loopback(request.registry)
        if request.downloads < 0:
            raise RequestError("downloads must not be negative")
        if request.pull not in (None, "image", "files"):
            raise RequestError(f"unknown pull {request.pull!r}")
        if request.pull and not request.tag:
            raise RequestError("a pull needs a tag")
        if request.pull == "image" and "/" not in (request.platform or ""):
            raise RequestError("an image pull needs a platform, os/arch")
        return request


def _optional(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return None if value is None else str(value)


def check_loopback(url: str) -> None:
    """Refuse any registry that is not on this machine: the peers must never leave it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RequestError(f"registry must be an http(s) URL, got {url!r}")
    host = parts.hostname or ""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise RequestError(f"registry host {host!r} is not a loopback address")


@dataclass(frozen=True)
class Unsupported:
    """What `prepare` returns when the client cannot express the request at all."""

    reason: str


def no_parallel(request: Request, how: str) -> Unsupported | None:
    """Unsupported, for a client without parallel ranges, when the request wants them; `how`
    says how the client fetches a blob instead."""
    if request.max_concurrency is None or request.max_concurrency <= 1:
        return None
    return Unsupported(f"no parallel ranges in one blob: {how}")


Download: TypeAlias = Callable[[Path], None]
"""One download of the request's blob to this path (a pull: into this folder) with the one
client; raises what it raised."""

Closer: TypeAlias = contextlib.ExitStack[bool | None]

Prepare: TypeAlias = Callable[[Request, Closer], Download | Unsupported]
"""Makes the client (entering what must be closed into the closer), or says it cannot."""


def platform_manifest(index: Any, os_: str, architecture: str) -> str:
    """The digest of the manifest an image index gives `os_`/`architecture`: the platform
    choice that runners make for clients that have none. KeyError when there is none."""
    for entry in index.get("manifests") or []:
        platform = entry.get("platform") or {}
        if platform.get("os") == os_ and platform.get("architecture") == architecture:
            return str(entry["digest"])
    raise KeyError(f"the index has no {os_}/{architecture} manifest")


def blob_file(folder: Path, digest: str) -> Path:
    """Where a composed pull writes a blob: `folder/<hex>`, as skopeo's `dir:` does."""
    hex_ = digest.partition(":")[2]
    if not hex_.isalnum():
        raise ValueError(f"not a digest: {digest!r}")
    return folder / hex_


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:ERROR_LIMIT]


def package_label(label: str, distribution: str) -> str:
    """`label VERSION`, the version as installed (e.g. `oras-py 0.2.43`)."""
    try:
        return f"{label} {importlib.metadata.version(distribution)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{label} (not installed)"


def _result(ok: bool, error: str | None, elapsed: float) -> dict[str, Any]:
    return {"ok": ok, "error": error, "elapsed": round(elapsed, 6)}


@dataclass
class _Progress:
    """What the worker thread has done so far; read by the main thread under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    results: list[dict[str, Any]] = field(default_factory=list)
    current_start: float | None = None
    unsupported: str | None = None
    crash: str | None = None


def _work(request: Request, prepare: Prepare, progress: _Progress) -> None:
    try:
        with contextlib.ExitStack() as stack:
            with progress.lock:
                # Making the client counts against the first download's time limit.
                progress.current_start = time.perf_counter()
            try:
                target = prepare(request, stack)
            except Exception as exc:
                # The client could not even be made: every download failed the same way.
                with progress.lock:
                    progress.results = [
                        _result(False, describe(exc), 0.0) for _ in range(request.downloads)
                    ]
                return
            if isinstance(target, Unsupported):
                with progress.lock:
                    progress.unsupported = target.reason
                return
            for index in range(request.downloads):
                start = time.perf_counter()
                with progress.lock:
                    progress.current_start = start
                error: str | None = None
                try:
                    target(request.destination(index))
                except Exception as exc:
                    error = describe(exc)
                elapsed = time.perf_counter() - start
                with progress.lock:
                    progress.results.append(_result(error is None, error, elapsed))
                    progress.current_start = None
    except BaseException:
        with progress.lock:
            progress.crash = traceback.format_exc()


def _observe(request: Request, prepare: Prepare, client: str) -> dict[str, Any]:
    progress = _Progress()
    worker = threading.Thread(
        target=_work, args=(request, prepare, progress), name="download", daemon=True
    )
    worker.start()
    limit = request.timeout
    stuck = False
    while worker.is_alive() and not stuck:
        worker.join(_POLL_SECONDS)
        with progress.lock:
            start = progress.current_start
        stuck = start is not None and time.perf_counter() - start > limit
    with progress.lock:
        if progress.crash is not None:
            raise RuntimeError(f"the runner crashed:\n{progress.crash}")
        if progress.unsupported is not None:
            return {"client": client, "unsupported": progress.unsupported, "downloads": []}
        results = list(progress.results)
        if worker.is_alive() and progress.current_start is not None:
            results.append(
                _result(
                    False,
                    f"Timeout: the client had not returned after {limit:g} s (the request's "
                    "timeout, which the runner applies to each download)",
                    time.perf_counter() - progress.current_start,
                )
            )
    while len(results) < request.downloads:
        results.append(_result(False, "NotAttempted: an earlier download never returned", 0.0))
    return {"client": client, "unsupported": None, "downloads": results}


def run(client: str, prepare: Prepare) -> None:
    """The whole runner: read the request on stdin, observe, write the observation, exit.

    Call it before importing the client's package (import it inside `prepare`), so that
    whatever the package prints on standard output at import time is kept off the observation.
    """
    observation_fd = os.dup(1)
    os.dup2(2, 1)  # the client's own prints go to stderr
    status = 0
    try:
        request = Request.parse(json.load(sys.stdin))
        request.output_dir.mkdir(parents=True, exist_ok=True)
        observation = _observe(request, prepare, client)
        with os.fdopen(observation_fd, "w", encoding="utf-8") as out:
            json.dump(observation, out)
            out.write("\n")
    except RequestError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        status = 2
    except Exception:
        traceback.print_exc()
        status = 1
    sys.stderr.flush()
    # A client still stuck in a download past its time limit must not hold the process open.
    os._exit(status)
