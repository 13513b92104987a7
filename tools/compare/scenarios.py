"""The server side of each scenario, on the testbed's real registries, and the judging rules.

A client's runner reports only what it observed (returned or raised); the verdict also uses
what the servers saw: the storage proxy's headers, the fault proxies' requests and relayed
bytes, the token requests, and the bytes in the files the client wrote.

Each scenario runs on one of two deployments, with the same fault and the same judge:
  "registry"  Debian's docker-registry (filesystem storage, or S3 storage on moto behind 307s,
              or a token server), a FaultProxy in front where the scenario injects a fault;
  "acr"       the ACR deployment (tools/testbed/acr.py): https, ACR's challenge, the AAD-token
              exchange, blob GETs answered 307 to Azurite with a real SAS; a fault on the
              blob's bytes is injected between the storage endpoint and Azurite
              (`storage_faults`), a fault on the registry's own answers by ACR's knobs or a
              FaultProxy over https in front of it.
A client that takes only an AAD credential (the Azure SDKs) runs every scenario on "acr"
(`serve(..., variant="acr")`); a scenario whose `server` starts with `acr-` runs on "acr"
for every client. On "acr" a request carries both an AAD token (`aad_token`, for clients
that take an AAD credential) and a user name and password (`credentials`, which ACR's
`/oauth2/token` takes as Basic auth, for the others). The ACR form of each setup:

  filesystem, s3-basic, token, proxy-plain   the blob as pushed (ACR always redirects)
  filesystem-flipped, acr-flipped            a byte flipped in storage (`tamper`)
  filesystem-sha512                          a sha512-addressed blob
  tls-s3-basic                               the 307s point at a plain-http storage endpoint
  proxy-wrong-digest-header                  an https FaultProxy rewrites the 307's header
  proxy-cut, proxy-ignore-range, proxy-drip  the fault on storage's answer
  proxy-429                                  ACR's own 429 TOOMANYREQUESTS (`throttle`)

A scenario with `"pull"` is a whole-artifact pull by tag instead of blob downloads: the setup
pushes an image (`"image"`: an OCI index of two platforms, linux/amd64 and linux/arm64/v8,
each with two gzipped layers of `size` bytes of content, as built images have) or an
ORAS-style artifact (`"files"`: two titled layers) under the tag `v1`, and the runner pulls it
into `output_dir/pull-<i>`. What it left there is read in either of two shapes:
  an OCI image layout   `index.json` (its entry whose `org.opencontainers.image.ref.name` is
                        the tag names the manifest) and `blobs/<alg>/<hex>`, as acr-blob's
                        `pull` and skopeo's `oci:` write;
  a `dir:` folder       `manifest.json` and one file per blob named by its digest's hex, as
                        skopeo's `dir:` writes; the runners of clients without a pull (they
                        compose one from get-manifest and download-blob calls) write this;
and for `"files"`, each titled layer as a file of its title.

Scenarios the orchestrator runs in more than one process (tools/compare/run.py): `"restart"`
(a first run killed with SIGKILL once `kill_after_bytes` of the blob have been relayed, then
a second run into the same folder; `Setup.between_runs` lifts the fault and resets the count)
and `"processes": 2` (two runners at once, into the same folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from tools.faultproxy import Fault, FaultProxy
from tools.testbed import (
    AcrDeployment,
    BlobEndpoint,
    Deployment,
    MotoServer,
    PlatformImage,
    PushedArtifact,
    PushedImage,
    RecordedRequest,
    TokenServer,
    flip_byte,
    open_acr_deployment,
    open_filesystem_registry,
    open_s3_registry,
    open_token_registry,
    push_artifact,
    push_image,
    put_blob_in_storage,
    server_ssl_context,
)

CREDENTIALS = ("compare", "compare-pass")
BLOBS = r"/blobs/"
# What a pull scenario pushes its image or artifact under, and the platform it asks for.
PULL_TAG = "v1"
PULL_PLATFORM = "linux/amd64"
REF_NAME = "org.opencontainers.image.ref.name"
# A layout's blob, blobs/<alg>/<hex>, as `alg:hex`.
BLOB_NAME = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
REGISTRY, ACR = "registry", "acr"
# The SAS of the sas-expiry scenario: `se` is written to the second, so 2 s is 1 to 2 s.
SHORT_SAS_LIFETIME = 2
# The access tokens of the token-expiry scenario (the JWT's `exp`), likewise 1 to 2 s.
SHORT_TOKEN_LIFETIME = 2
# A share of the time one capped connection takes for the blob (the drip's pauses alone):
# no download over a single connection finishes under it.
PARALLEL_BOUND = 0.9
# A blob fetched at most this many times its size counts as fetched once (a few bytes of
# error bodies, a Range probe).
ONCE = 1.1


@dataclass
class Setup:
    """What a runner is told (registry, repository, digest, ...) and what the judge reads."""

    registry: str
    repository: str
    digest: str
    data: bytes
    credentials: tuple[str, str] | None = None
    aad_token: str | None = None
    ca_cert: Path | None = None
    deployment: Deployment | None = None
    acr: AcrDeployment | None = None
    # In front of the registry, where the scenario bends the registry's own answers.
    fault_proxy: FaultProxy | None = None
    # What the blob's bytes pass through: the front FaultProxy, or ACR's storage_faults.
    body_proxy: FaultProxy | None = None
    token_server: TokenServer | None = None
    # The plain-http storage endpoint an ACR's 307s point at (https-to-http).
    http_storage: BlobEndpoint | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    # A pull scenario's: what it pushed under `PULL_TAG`, and the platform wanted.
    image: PushedImage | None = None
    artifact: PushedArtifact | None = None
    platform: str | None = None

    @property
    def variant(self) -> str:
        return ACR if self.acr is not None else REGISTRY

    @property
    def wanted(self) -> PlatformImage:
        """The image of the platform a pull scenario asks for."""
        assert self.image is not None and self.platform is not None
        os_, architecture = self.platform.split("/")[:2]
        return self.image.image(architecture, os=os_)

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
            # The blob's size, as a manifest gives it with the digest (None for a pull).
            "size": None if scenario.get("pull") else len(self.data),
            "credentials": credentials,
            "aad_token": self.aad_token,
            # Whether a 401 is a Bearer challenge (token protocol) rather than Basic.
            "token_auth": self.acr is not None or self.token_server is not None,
            "ca_cert": str(self.ca_cert) if self.ca_cert else None,
            "output_dir": str(output_dir),
            "downloads": scenario.get("downloads", 1),
            "max_concurrency": scenario.get("max_concurrency"),
            "timeout": 60,
            "tag": self.notes.get("tag"),
            "pull": scenario.get("pull"),
            "platform": self.platform,
        }

    # What the servers saw, the same questions on either deployment.

    def clear_records(self) -> None:
        """Forget what the setup's own requests left in the logs (a tag pushed over HTTP)."""
        for proxy in (self.fault_proxy, self.body_proxy):
            if proxy is not None:
                proxy.clear()
        if self.acr is not None:
            self.acr.registry.clear()
            self.acr.tokens.clear()
            self.acr.blob_endpoint.clear()
        if self.deployment is not None and self.deployment.proxy is not None:
            self.deployment.proxy.clear()
        if self.token_server is not None:
            self.token_server.clear()

    def storage_requests(self) -> list[RecordedRequest]:
        """The requests that reached the storage host through a redirect."""
        if self.acr is not None:
            extra = self.http_storage.sas_requests if self.http_storage else []
            return self.acr.storage_requests + extra
        proxy = self.deployment.proxy if self.deployment else None
        return proxy.presigned_requests if proxy else []

    def blob_requests(self) -> int:
        """The requests for a blob that reached the registry."""
        if self.acr is not None:
            return len([r for r in self.acr.registry.requests if _is_blob_path(r.path)])
        proxy = self.fault_proxy
        return len([r for r in proxy.requests if _is_blob_path(r.path)]) if proxy else 0

    def throttled(self) -> int:
        """How many blob requests were answered 429."""
        if self.acr is not None:
            return len([r for r in self.acr.registry.requests if r.status == 429])
        return len(self.fault_proxy.firings) if self.fault_proxy else 0

    def token_requests(self) -> int:
        """Requests for an access token (not ACR's exchanges of an AAD token)."""
        if self.acr is not None:
            return len(self.acr.registry.requests_to("/oauth2/token"))
        return self.token_server.count() if self.token_server else 0

    def refused_tokens(self) -> int:
        """Registry requests with a token that were answered 401: a token that had expired."""
        if self.acr is None:
            return 0
        return len(
            [
                r
                for r in self.acr.registry.requests
                if r.status == 401 and r.header("Authorization") is not None
            ]
        )

    def redirects(self) -> int:
        """The registry's 307s to storage (ACR): each a fresh signed URL."""
        if self.acr is None:
            return 0
        return len([r for r in self.acr.registry.requests if r.status == 307])

    def body_bytes(self) -> int:
        """The blob bytes relayed to the client so far (see FaultProxy.body_bytes)."""
        return self.body_proxy.body_bytes if self.body_proxy else 0

    def between_runs(self) -> None:
        """A restart scenario's first run is over: lift the fault, count afresh."""
        if self.body_proxy is not None:
            self.body_proxy.clear_faults()
            self.body_proxy.clear()

    def add_body_fault(self, fault: Fault, times: int | None = None) -> None:
        """Apply `fault` to the answers that carry this blob's bytes."""
        assert self.body_proxy is not None
        hex_ = self.digest.partition(":")[2]
        self.body_proxy.add(fault, path=re.escape(hex_), method="GET", times=times)


def _is_blob_path(path: str) -> bool:
    return "/blobs/" in path and "/blobs/uploads/" not in path


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
        if name == "s3-basic":
            return enter(open_s3_registry(self._get("moto"), auth=CREDENTIALS))
        if name == "tls-s3-basic":
            return enter(open_s3_registry(self._get("moto"), auth=CREDENTIALS, tls=True))
        if name == "token-server":
            return enter(TokenServer(users=dict([CREDENTIALS]), public_repositories=set()))
        if name == "token":
            return enter(open_token_registry(self._get("token-server"), auth=CREDENTIALS))
        if name == ACR:
            # The user is for clients without AAD: ACR's /oauth2/token takes it as Basic.
            return enter(open_acr_deployment(users=dict([CREDENTIALS])))
        raise ValueError(f"unknown server {name!r}")

    def deployment(self, name: str) -> Deployment:
        deployment: Deployment = self._get(name)
        return deployment

    def acr(self) -> AcrDeployment:
        acr: AcrDeployment = self._get(ACR)
        return acr


def variant_of(scenario: dict[str, Any], aad_only: bool) -> str:
    """Where `scenario` runs for a client (`aad_only`: it takes only an AAD credential)."""
    return ACR if aad_only or str(scenario["server"]).startswith("acr-") else REGISTRY


@contextlib.contextmanager
def serve(
    scenario: dict[str, Any], servers: Servers, index: int, variant: str = REGISTRY
) -> Iterator[Setup]:
    """Set up the server side of `scenario` for one client run (`index` keeps runs apart) on
    the deployment `variant` ("registry" or "acr", see the module's docstring)."""
    data = os.urandom(scenario["size"])
    repository = f"compare/{scenario['name']}-{index}"
    with contextlib.ExitStack() as stack:
        if variant == ACR:
            setup = _serve_acr(scenario, servers.acr(), repository, data, stack)
        else:
            setup = _serve_registry(scenario, servers, repository, data, stack)
        setup.clear_records()
        yield setup


def _drip(scenario: dict[str, Any]) -> Fault:
    drip = scenario["drip"]
    return Fault.drip(int(drip["chunk"]), float(drip["interval"]))


def _serve_registry(
    scenario: dict[str, Any],
    servers: Servers,
    repository: str,
    data: bytes,
    stack: contextlib.ExitStack,
) -> Setup:
    kind: str = scenario["server"]
    if kind.startswith("acr-"):
        raise ValueError(f"{kind!r} runs on the ACR deployment only")
    if kind.startswith(("proxy-", "filesystem")):
        deployment = servers.deployment("filesystem")
    else:
        deployment = servers.deployment(kind)
    pull = scenario.get("pull")
    if pull is not None:
        return _push_for_pull(pull, kind, deployment, repository, scenario["size"])
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
        setup.registry, setup.fault_proxy, setup.body_proxy = proxy.url, proxy, proxy
        if kind == "proxy-wrong-digest-header":
            proxy.add(_wrong_digest_header(), path=BLOBS, method="GET")
        elif kind == "proxy-429":
            setup.add_body_fault(Fault.respond(429, {"Retry-After": "2"}, "slow down"), times=1)
        else:
            _add_body_faults(kind, scenario, setup)
    return setup


def _wrong_digest_header() -> Fault:
    return Fault.set_header(
        "Docker-Content-Digest", "sha256:" + hashlib.sha256(b"other").hexdigest()
    )


def _add_body_faults(kind: str, scenario: dict[str, Any], setup: Setup) -> None:
    """The faults on the blob's bytes, wherever they pass (see Setup.add_body_fault)."""
    if kind == "proxy-cut":
        setup.add_body_fault(Fault.cut_after(len(setup.data) // 3), times=1)
    elif kind == "proxy-ignore-range":
        setup.add_body_fault(Fault.ignore_range())
    elif kind == "proxy-drip":
        setup.add_body_fault(_drip(scenario))
    elif kind != "proxy-plain":
        raise ValueError(f"unknown server {kind!r}")


def _serve_acr(
    scenario: dict[str, Any],
    acr: AcrDeployment,
    repository: str,
    data: bytes,
    stack: contextlib.ExitStack,
) -> Setup:
    kind: str = scenario["server"]
    # Knobs, faults and logs back to the defaults before and after: runs share the deployment.
    acr.reset()
    stack.callback(acr.reset)
    setup = Setup(
        registry=acr.url,
        repository=repository,
        digest="",
        data=data,
        credentials=CREDENTIALS,
        aad_token=acr.aad_token,
        ca_cert=acr.ca_cert,
        acr=acr,
        body_proxy=acr.storage_faults,
    )
    pull = scenario.get("pull")
    if pull is not None:
        _push_for_pull_acr(pull, kind, acr, setup, scenario["size"])
        return setup
    algorithm = "sha512" if kind == "filesystem-sha512" else "sha256"
    digest = acr.push(repository, data, algorithm=algorithm)
    setup.digest = scenario.get("digest_override", digest)
    registry = acr.registry
    if kind in ("filesystem-flipped", "acr-flipped"):
        acr.tamper(digest, _flipped(data, len(data) // 2))
    elif kind == "tls-s3-basic":
        endpoint = stack.enter_context(BlobEndpoint(acr.storage_faults.url, host="127.0.0.2"))
        storage, https_endpoint = registry.storage, registry.storage.endpoint_url
        storage.endpoint_url = endpoint.url
        stack.callback(setattr, storage, "endpoint_url", https_endpoint)
        setup.http_storage = endpoint
    elif kind == "proxy-wrong-digest-header":
        front = stack.enter_context(
            FaultProxy(
                acr.url,
                upstream_ssl=ssl.create_default_context(cafile=str(acr.ca_cert)),
                ssl_context=server_ssl_context(*registry.tls),
            )
        )
        front.add(_wrong_digest_header(), path=BLOBS, method="GET")
        setup.registry, setup.fault_proxy = front.url, front
    elif kind == "proxy-429":
        registry.throttle(1, retry_after="2")
    elif kind == "acr-sas-expiry":
        # The first answer drips past the SAS's expiry, then breaks off: a resume with the
        # same URL is refused (403 AuthenticationFailed); a fresh 307 has a fresh SAS.
        registry.sas_lifetime = SHORT_SAS_LIFETIME
        cut = Fault.cut_after(len(data) // 2)
        setup.add_body_fault(_drip(scenario) | cut, times=1)
    elif kind == "acr-token-expiry":
        # The first download drips past the access token's `exp`: the second one's token,
        # if the client kept it, is refused with a 401 and a fresh challenge.
        registry.access_token_lifetime = SHORT_TOKEN_LIFETIME
        setup.add_body_fault(_drip(scenario), times=1)
    elif kind == "acr-storage-permission":
        # A SAS without read permission: storage's 403 AuthorizationPermissionMismatch.
        registry.sas_permissions = "w"
    elif kind.startswith("proxy-"):
        _add_body_faults(kind, scenario, setup)
    elif kind not in ("filesystem", "filesystem-sha512", "s3-basic", "token", "acr-plain"):
        raise ValueError(f"unknown server {kind!r}")
    return setup


def _flipped(data: bytes, offset: int) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= 0xFF
    return bytes(changed)


def _push_for_pull_acr(pull: str, kind: str, acr: AcrDeployment, setup: Setup, size: int) -> None:
    """As _push_for_pull, on the ACR deployment (over HTTP, as ACR is pushed to)."""
    setup.notes["tag"] = PULL_TAG
    if pull == "files":
        files = {"model.bin": os.urandom(size), "vocab.txt": os.urandom(size // 4 + 1)}
        setup.artifact = push_artifact(acr, setup.repository, PULL_TAG, files)
        setup.digest = setup.artifact.manifest_digest
        return
    if pull != "image":
        raise ValueError(f"unknown pull {pull!r}")
    setup.image = push_image(acr, setup.repository, PULL_TAG, layer_size=size, gzip_layers=True)
    setup.digest = setup.image.digest
    setup.platform = PULL_PLATFORM
    if kind == "filesystem-flipped-layer":
        layer = setup.wanted.layers[-1]
        acr.tamper(layer.digest, _flipped(layer.data, layer.size // 2))
        setup.notes["corrupt"] = layer.digest
    elif kind != "filesystem":
        raise ValueError(f"a pull scenario runs on filesystem storage, not {kind!r}")


def _push_for_pull(
    pull: str, kind: str, deployment: Deployment, repository: str, size: int
) -> Setup:
    """Push what a pull scenario pulls under PULL_TAG (see the module's docstring)."""
    setup = Setup(
        registry=deployment.url,
        repository=repository,
        digest="",
        data=b"",
        ca_cert=deployment.ca_cert,
        deployment=deployment,
    )
    setup.notes["tag"] = PULL_TAG
    if pull == "files":
        files = {"model.bin": os.urandom(size), "vocab.txt": os.urandom(size // 4 + 1)}
        setup.artifact = push_artifact(deployment, repository, PULL_TAG, files)
        setup.digest = setup.artifact.manifest_digest
        return setup
    if pull != "image":
        raise ValueError(f"unknown pull {pull!r}")
    setup.image = push_image(deployment, repository, PULL_TAG, layer_size=size, gzip_layers=True)
    setup.digest = setup.image.digest
    setup.platform = PULL_PLATFORM
    if kind == "filesystem-flipped-layer":
        assert deployment.root is not None
        layer = setup.wanted.layers[-1]
        flip_byte(deployment.root, layer.digest, offset=layer.size // 2)
        setup.notes["corrupt"] = layer.digest
    elif kind != "filesystem":
        raise ValueError(f"a pull scenario runs on filesystem storage, not {kind!r}")
    return setup


@dataclass
class Verdict:
    result: str  # "pass", "fail" or "n/a"
    observation: str


def error_kind(error: str | None) -> str:
    """The exception's type only: messages carry ports and paths that change between runs."""
    return (error or "error").split(":", 1)[0].strip()[:60]


def _mib(size: float) -> str:
    return f"{size / (1 << 20):g} MiB"


def judge(
    scenario: dict[str, Any], setup: Setup, observed: dict[str, Any], output_dir: Path
) -> Verdict:
    """The verdict for one client on one scenario, from its report and the servers' records."""
    if observed.get("unsupported"):
        return Verdict("n/a", str(observed["unsupported"]))
    downloads: list[dict[str, Any]] = observed.get("downloads") or []
    if not downloads:
        return Verdict("fail", "the runner reported no download")
    if scenario.get("pull"):
        return _judge_pull(scenario["judge"], setup, downloads[0], output_dir / "pull-0")
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
    why = error_kind(failed["error"] if failed else None)
    rule = scenario["judge"]

    if rule == "bytes":
        if all(right):
            return Verdict("pass", "downloaded the right bytes")
        if all_ok:
            return Verdict("fail", "reported success with wrong or missing bytes")
        return Verdict("fail", f"failed: {why}")
    if rule == "no-leak":
        leaked = any(r.header("Authorization") is not None for r in setup.storage_requests())
        if leaked:
            return Verdict("fail", "sent Authorization to the storage host")
        if all(right):
            return Verdict("pass", "followed the 307; storage saw no Authorization")
        return Verdict("fail", f"failed: {why}")
    if rule == "refused-downgrade":
        contacted = bool(setup.storage_requests())
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
    if rule == "error-code":
        code = str(scenario["code"])
        if all_ok:
            what = "right" if all(right) else "wrong"
            return Verdict("fail", f"reported success ({what} bytes)")
        if code in str(failed["error"] if failed else ""):
            return Verdict("pass", f"failed naming {code}: {why}")
        return Verdict("fail", f"failed ({why}) without naming the storage's code {code}")
    if rule == "waited":
        if not all(right):
            return Verdict("fail", f"gave up: {why}")
        if setup.throttled() < 1:
            return Verdict("fail", "did not see the 429")  # cannot happen with the rule above
        if downloads[0]["elapsed"] >= 1.9:
            return Verdict("pass", "waited the 2 s it was told, then downloaded")
        return Verdict("fail", "retried without waiting for Retry-After")
    if rule == "one-token":
        count = setup.token_requests()
        n = len(downloads)
        if not all(right):
            return Verdict("fail", f"failed: {why}")
        verdict = "pass" if count <= 1 else "fail"
        return Verdict(verdict, f"{count} token request(s) for {n} downloads")
    if rule == "no-request":
        sent = setup.blob_requests()
        if all_ok:
            return Verdict("fail", "reported success for an invalid digest")
        if sent:
            return Verdict("fail", f"sent {sent} request(s) for it, then failed")
        return Verdict("pass", f"rejected before any request: {why}")
    if rule == "fresh-url":
        stale = _reused_signed_url(setup.storage_requests())
        if all(right):
            return Verdict("pass", f"resumed through a fresh 307 ({setup.redirects()} in all)")
        retried = " (retried the expired SAS URL)" if stale else ""
        if all_ok:
            return Verdict("fail", "reported success with wrong or missing bytes")
        return Verdict("fail", f"failed: {why}{retried}")
    if rule == "re-auth":
        if not all(right):
            return Verdict("fail", f"failed: {why}")
        if setup.refused_tokens():
            return Verdict("pass", "sent the expired token, got a 401, fetched a new one")
        return Verdict("pass", "fetched a new token before sending the expired one")
    if rule == "parallel":
        return _judge_parallel(scenario, downloads[0], all(right), why)
    if rule == "resumed":
        return _judge_restart(observed, len(setup.data), all(right), all_ok, why)
    if rule == "fetched-once":
        return _judge_two_processes(observed, len(setup.data), all(right))
    raise ValueError(f"unknown judge {rule!r}")


def _reused_signed_url(requests: list[RecordedRequest]) -> bool:
    """Whether two requests to storage carried the same signature: a SAS used again."""
    signatures = [tuple(parse_qs(r.query).get("sig", ())) for r in requests]
    signatures = [s for s in signatures if s]
    return len(set(signatures)) < len(signatures)


def _judge_parallel(
    scenario: dict[str, Any], download: dict[str, Any], right: bool, why: str
) -> Verdict:
    """Right bytes in well under the time one connection's cap allows for the blob."""
    drip = scenario["drip"]
    cap = float(drip["chunk"]) / float(drip["interval"])
    one = scenario["size"] / cap
    bound = PARALLEL_BOUND * one
    if not right:
        return Verdict("fail", f"failed: {why}" if not download["ok"] else "wrong bytes")
    told = f"{_mib(scenario['size'])} at {_mib(cap)}/s per connection: {one:.0f} s on one"
    if download["elapsed"] < bound:
        return Verdict("pass", f"right bytes in under {bound:g} s ({told})")
    return Verdict("fail", f"right bytes, but no faster than one connection ({told})")


def _judge_restart(observed: dict[str, Any], size: int, right: bool, ok: bool, why: str) -> Verdict:
    """From what tools/compare/run.py recorded of the two runs (`observed["restart"]`)."""
    restart = observed.get("restart") or {}
    if not restart.get("first_run_killed"):
        return Verdict(
            "fail", f"the first run ended before it was killed: {restart.get('first_run_why')}"
        )
    if not right:
        return Verdict("fail", f"the second run failed: {why}" if not ok else "wrong bytes")
    if int(restart.get("second_run_bytes", size)) < size:
        return Verdict("pass", "the second run fetched only the rest of the blob")
    return Verdict("fail", "the second run fetched the whole blob again")


def _judge_two_processes(observed: dict[str, Any], size: int, right: bool) -> Verdict:
    """From each process's observation and the blob bytes relayed to both (`fetched_bytes`)."""
    processes: list[dict[str, Any]] = observed.get("processes") or []
    for number, process in enumerate(processes, 1):
        downloads = process.get("downloads") or []
        if process.get("runner_error") or not downloads:
            return Verdict("fail", f"process {number}: the runner reported no download")
        if not downloads[0]["ok"]:
            return Verdict("fail", f"process {number} failed: {error_kind(downloads[0]['error'])}")
    if not right:
        return Verdict("fail", "both reported success; the file has wrong bytes")
    fetched = int(observed.get("fetched_bytes", 0)) / max(size, 1)
    if fetched <= ONCE:
        return Verdict("pass", "right bytes; the blob was fetched once")
    return Verdict("fail", f"right bytes; the blob was fetched {fetched:.1f} times")


class _Pulled:
    """What a pull left in its folder: the manifest it names and the blobs it holds."""

    def __init__(self, root: Path, tag: str) -> None:
        self.root = root
        self.layout = (root / "index.json").is_file()
        self.manifest: bytes | None = None
        self.problem: str | None = None  # why no manifest could be read
        self.names_tag = False  # an index.json entry names the tag
        if self.layout:
            self._read_layout(tag)
        elif (root / "manifest.json").is_file():
            self.manifest = (root / "manifest.json").read_bytes()
        else:
            self.problem = "wrote no manifest"

    def _read_layout(self, tag: str) -> None:
        try:
            index = json.loads((self.root / "index.json").read_bytes())
            entries = [
                entry
                for entry in index.get("manifests", [])
                if (entry.get("annotations") or {}).get(REF_NAME) == tag
            ]
        except (ValueError, AttributeError, TypeError):
            self.problem = "wrote an index.json that is not an image index"
            return
        self.names_tag = bool(entries)
        if len(entries) != 1:
            self.problem = f"wrote an index.json with {len(entries)} entries named {tag}"
            return
        digest = str(entries[0].get("digest", ""))
        data = self.blob(digest)
        if data is None:
            self.problem = "its index.json names a manifest that is not in blobs/"
        elif _digest_of(data, digest) != digest:
            self.problem = "its index.json names a manifest whose bytes do not match"
        else:
            self.manifest = data

    def blob(self, digest: str) -> bytes | None:
        """The blob of this digest as the pull left it (None: not there)."""
        algorithm, _, hex_ = digest.partition(":")
        if not (algorithm.isalnum() and hex_.isalnum()):
            return None
        path = self.root / "blobs" / algorithm / hex_ if self.layout else self.root / hex_
        return path.read_bytes() if path.is_file() else None

    def mismatched_blobs(self) -> list[str]:
        """The layout's blobs whose bytes do not hash to their names. Only names that are a
        digest's hex count: others (a resumable `.partial` file, say) are no blob to a reader."""
        blobs = self.root / "blobs"
        if not blobs.is_dir():
            return []
        wrong = []
        for path in sorted(blobs.glob("*/*")):
            name = f"{path.parent.name}:{path.name}"
            blob = BLOB_NAME.fullmatch(name) is not None and path.is_file()
            if blob and _digest_of(path.read_bytes(), name) != name:
                wrong.append(name)
        return wrong


def _digest_of(data: bytes, like: str) -> str:
    algorithm = like.partition(":")[0]
    if algorithm not in ("sha256", "sha512"):
        algorithm = "sha256"
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _names(manifest: bytes) -> list[str] | None:
    """The config's and the layers' digests a manifest names (None: not an image manifest)."""
    try:
        document = json.loads(manifest)
        return [document["config"]["digest"]] + [layer["digest"] for layer in document["layers"]]
    except (ValueError, KeyError, TypeError):
        return None


def _image_in(pulled: _Pulled, setup: Setup) -> Verdict:
    """Whether `pulled` holds the wanted platform's manifest, config and layers."""
    wanted = setup.wanted
    assert setup.image is not None
    if pulled.manifest is None:
        files = sum(1 for path in pulled.root.rglob("*") if path.is_file())
        if files == 0:
            return Verdict("fail", "reported success but wrote nothing")
        return Verdict("fail", f"reported success but {pulled.problem} ({files} files)")
    for other in setup.image.images:
        if other is not wanted and pulled.manifest == other.manifest.data:
            name = "/".join(filter(None, (other.os, other.architecture, other.variant)))
            return Verdict("fail", f"pulled {name}, not {setup.platform}")
    expected = [blob.digest for blob in wanted.blobs]
    same = pulled.manifest == wanted.manifest.data
    if not same and _names(pulled.manifest) != expected:
        return Verdict("fail", "wrote a manifest that names other blobs than the registry's")
    kinds = ["config"] + [f"layer {n + 1}" for n in range(len(wanted.layers))]
    found = {
        kind: (pulled.blob(blob.digest), blob.data)
        for kind, blob in zip(kinds, wanted.blobs, strict=True)
    }
    missing = [kind for kind, (data, _) in found.items() if data is None]
    wrong = [kind for kind, (data, right) in found.items() if data is not None and data != right]
    if missing or wrong:
        return Verdict("fail", f"reported success with {_missing_or_wrong(missing, wrong)}")
    layers = f"{len(wanted.layers)} layers"
    if same:
        return Verdict("pass", f"manifest, config and {layers} byte for byte")
    return Verdict(
        "pass",
        f"config and {layers} byte for byte; the manifest re-serialised "
        "(the same blobs, another digest than the registry's)",
    )


def _missing_or_wrong(missing: list[str], wrong: list[str]) -> str:
    told = [f"no {', '.join(missing)}"] if missing else []
    told += [f"wrong bytes in {', '.join(wrong)}"] if wrong else []
    return "; ".join(told)


def _judge_pull(rule: str, setup: Setup, download: dict[str, Any], root: Path) -> Verdict:
    """A pull scenario's verdict from what was left in `root` (see the module's docstring).

    After an error, only a layout is held to leaving nothing wrong behind (no index.json
    entry for the tag, no blob that fails its name): a `dir:` folder is the runner's own
    writing of the client's streams, whatever they were when the client raised.
    """
    why = error_kind(download["error"])
    tag = str(setup.notes["tag"])
    if rule == "image":
        if not download["ok"]:
            return Verdict("fail", f"failed: {why}")
        return _image_in(_Pulled(root, tag), setup)
    if rule == "files":
        assert setup.artifact is not None
        if not download["ok"]:
            return Verdict("fail", f"failed: {why}")
        expected = setup.artifact.files
        missing = [name for name in expected if not (root / name).is_file()]
        wrong = [
            name
            for name, blob in expected.items()
            if name not in missing and (root / name).read_bytes() != blob.data
        ]
        if missing or wrong:
            return Verdict("fail", f"reported success with {_missing_or_wrong(missing, wrong)}")
        return Verdict("pass", f"wrote the {len(expected)} titled layers as files, byte for byte")
    if rule == "pull-error":
        pulled = _Pulled(root, tag)
        if download["ok"]:
            if pulled.manifest is None and not any(root.rglob("*")):
                return Verdict("fail", "reported success and wrote nothing")
            corrupt = str(setup.notes.get("corrupt"))
            left = pulled.blob(corrupt)
            if left is not None and _digest_of(left, corrupt) != corrupt:
                return Verdict("fail", "reported success, the corrupt layer written")
            return Verdict("fail", "reported success")
        if pulled.names_tag:
            return Verdict("fail", f"detected ({why}) but left an index.json naming {tag}")
        if pulled.mismatched_blobs():
            return Verdict("fail", f"detected ({why}) but left a blob that fails its digest")
        return Verdict("pass", f"detected: {why}")
    raise ValueError(f"unknown pull judge {rule!r}")


def _hash_file(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
