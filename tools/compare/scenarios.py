"""The server side of each scenario, on the testbed's real registries, and the judging rules.

A client's runner reports only what it observed (returned or raised); the verdict also uses
what the servers saw: the storage proxy's headers, the fault proxy's requests, the token
server's count, and the bytes in the files the client wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.faultproxy import Fault, FaultProxy
from tools.testbed import (
    Deployment,
    MotoServer,
    TokenServer,
    flip_byte,
    open_filesystem_registry,
    open_s3_registry,
    open_token_registry,
    put_blob_in_storage,
)

CREDENTIALS = ("compare", "compare-pass")
BLOBS = r"/blobs/"


@dataclass
class Setup:
    """What a runner is told (registry, repository, digest, ...) and what the judge reads."""

    registry: str
    repository: str
    digest: str
    data: bytes
    credentials: tuple[str, str] | None = None
    ca_cert: Path | None = None
    deployment: Deployment | None = None
    fault_proxy: FaultProxy | None = None
    token_server: TokenServer | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def request(self, scenario: dict[str, Any], output_dir: Path) -> dict[str, Any]:
        credentials = (
            {"username": self.credentials[0], "password": self.credentials[1]}
            if self.credentials
            else None
        )
        return {
            "scenario": scenario["name"],
            "registry": self.registry,
            "repository": self.repository,
            "digest": self.digest,
            "credentials": credentials,
            "ca_cert": str(self.ca_cert) if self.ca_cert else None,
            "output_dir": str(output_dir),
            "downloads": scenario.get("downloads", 1),
            "timeout": 60,
            "tag": self.notes.get("tag"),
        }


class Servers:
    """The registries every scenario draws on, started once, on first use."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._stack = stack
        self._started: dict[str, Any] = {}

    def _get(self, name: str) -> Any:
        if name not in self._started:
            self._started[name] = self._start(name)
        return self._started[name]

    def _start(self, name: str) -> Any:
        enter = self._stack.enter_context
        if name == "moto":
            return enter(MotoServer())
        if name == "filesystem":
            return enter(open_filesystem_registry())
        if name == "filesystem-tls":
            return enter(open_filesystem_registry(tls=True))
        if name == "s3-basic":
            return enter(open_s3_registry(self._get("moto"), auth=CREDENTIALS))
        if name == "tls-s3-basic":
            return enter(open_s3_registry(self._get("moto"), auth=CREDENTIALS, tls=True))
        if name == "token-server":
            return enter(TokenServer(users=dict([CREDENTIALS]), public_repositories=set()))
        if name == "token":
            return enter(open_token_registry(self._get("token-server"), auth=CREDENTIALS))
        if name == "token-tls":
            return enter(open_token_registry(self._get("token-server"), auth=CREDENTIALS, tls=True))
        raise ValueError(f"unknown server {name!r}")

    def deployment(self, name: str) -> Deployment:
        deployment: Deployment = self._get(name)
        return deployment


@contextlib.contextmanager
def serve(
    scenario: dict[str, Any], servers: Servers, index: int, tls: bool = False
) -> Iterator[Setup]:
    """Set up the server side of `scenario` for one client run (`index` keeps runs apart).

    With `tls`, for clients that refuse plain http, the registry itself is https where the
    scenario allows (the proxies in front of registries and storage speak plain http).
    """
    kind: str = scenario["server"]
    data = os.urandom(scenario["size"])
    repository = f"compare/{scenario['name']}-{index}"
    with contextlib.ExitStack() as stack:
        suffix = "-tls" if tls else ""
        if kind.startswith("proxy-"):
            deployment = servers.deployment("filesystem")
        elif kind.startswith("filesystem"):
            deployment = servers.deployment("filesystem" + suffix)
        elif kind == "token":
            deployment = servers.deployment("token" + suffix)
        else:
            deployment = servers.deployment(kind)
        if kind == "filesystem-sha512":
            assert deployment.root is not None
            digest = put_blob_in_storage(deployment.root, repository, data, "sha512")
        else:
            digest = deployment.push(repository, data)
        if kind == "filesystem-flipped":
            assert deployment.root is not None
            flip_byte(deployment.root, digest, offset=len(data) // 2)
        setup = Setup(
            registry=deployment.url,
            repository=repository,
            digest=scenario.get("digest_override", digest),
            data=data,
            credentials=CREDENTIALS if scenario.get("credentials") else None,
            ca_cert=deployment.ca_cert,
            deployment=deployment,
            token_server=deployment.token_server,
        )
        if kind.startswith("proxy-"):
            proxy = stack.enter_context(FaultProxy(deployment.url))
            setup.registry, setup.fault_proxy = proxy.url, proxy
            fault = {
                "proxy-wrong-digest-header": Fault.set_header(
                    "Docker-Content-Digest", "sha256:" + hashlib.sha256(b"other").hexdigest()
                ),
                "proxy-cut": Fault.cut_after(len(data) // 3),
                "proxy-429": Fault.respond(429, {"Retry-After": "2"}, "slow down"),
                "proxy-ignore-range": Fault.ignore_range(),
                "proxy-plain": None,
            }[kind]
            times = None if kind in ("proxy-ignore-range", "proxy-wrong-digest-header") else 1
            if fault is not None:
                proxy.add(fault, path=BLOBS, method="GET", times=times)
        if deployment.proxy is not None:
            deployment.proxy.clear()
        if setup.token_server is not None:
            setup.token_server.clear()
        yield setup


@dataclass
class Verdict:
    result: str  # "pass", "fail" or "n/a"
    observation: str


def _error_kind(error: str | None) -> str:
    """The exception's type only: messages carry ports and paths that change between runs."""
    return (error or "error").split(":", 1)[0].strip()[:60]


def judge(
    scenario: dict[str, Any], setup: Setup, observed: dict[str, Any], output_dir: Path
) -> Verdict:
    """The verdict for one client on one scenario, from its report and the servers' records."""
    if observed.get("unsupported"):
        return Verdict("n/a", str(observed["unsupported"]))
    downloads: list[dict[str, Any]] = observed.get("downloads") or []
    if not downloads:
        return Verdict("fail", "the runner reported no download")
    expected = (
        hashlib.sha512(setup.data) if setup.digest.startswith("sha512:") else None
    ) or hashlib.sha256(setup.data)
    files = [output_dir / f"blob-{i}" for i in range(len(downloads))]
    right = [
        d["ok"] and f.exists() and _hash_file(f, expected.name) == expected.hexdigest()
        for d, f in zip(downloads, files, strict=True)
    ]
    all_ok = all(d["ok"] for d in downloads)
    failed = next((d for d in downloads if not d["ok"]), None)
    why = _error_kind(failed["error"] if failed else None)
    rule = scenario["judge"]

    if rule == "bytes":
        if all(right):
            return Verdict("pass", "downloaded the right bytes")
        if all_ok:
            return Verdict("fail", "reported success with wrong or missing bytes")
        return Verdict("fail", f"failed: {why}")
    if rule == "no-leak":
        storage = setup.deployment.proxy if setup.deployment else None
        leaked = storage is not None and any(
            r.header("Authorization") is not None for r in storage.presigned_requests
        )
        if leaked:
            return Verdict("fail", "sent Authorization to the storage host")
        if all(right):
            return Verdict("pass", "followed the 307; storage saw no Authorization")
        return Verdict("fail", f"failed: {why}")
    if rule == "refused-downgrade":
        storage = setup.deployment.proxy if setup.deployment else None
        contacted = storage is not None and bool(storage.presigned_requests)
        if all_ok:
            return Verdict("fail", "followed the https-to-http redirect")
        if contacted:
            return Verdict("fail", "followed the redirect to http, then failed")
        return Verdict("pass", f"refused: {why}")
    if rule == "error":
        if not all_ok:
            return Verdict("pass", f"detected: {why}")
        what = "right" if all(right) else "wrong"
        return Verdict("fail", f"reported success ({what} bytes)")
    if rule == "waited":
        proxy = setup.fault_proxy
        blob_requests = len([r for r in proxy.requests if "/blobs/" in r.path]) if proxy else 0
        if not all(right):
            return Verdict("fail", f"gave up: {why}")
        if blob_requests < 2:
            return Verdict("fail", "did not see the 429")  # cannot happen with the rule above
        if downloads[0]["elapsed"] >= 1.9:
            return Verdict("pass", "waited the 2 s it was told, then downloaded")
        return Verdict("fail", "retried without waiting for Retry-After")
    if rule == "one-token":
        count = setup.token_server.count() if setup.token_server else 0
        n = len(downloads)
        if not all(right):
            return Verdict("fail", f"failed: {why}")
        verdict = "pass" if count <= 1 else "fail"
        return Verdict(verdict, f"{count} token request(s) for {n} downloads")
    if rule == "no-request":
        proxy = setup.fault_proxy
        sent = len([r for r in proxy.requests if "/blobs/" in r.path]) if proxy else 0
        if all_ok:
            return Verdict("fail", "reported success for an invalid digest")
        if sent:
            return Verdict("fail", f"sent {sent} request(s) for it, then failed")
        return Verdict("pass", f"rejected before any request: {why}")
    raise ValueError(f"unknown judge {rule!r}")


def _hash_file(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
