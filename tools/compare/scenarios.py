"""The server side of each scenario, on the testbed's real registries, and the judging rules.

A client's runner reports only what it observed (returned or raised); the verdict also uses
what the servers saw: the storage proxy's headers, the fault proxy's requests, the token
server's count, and the bytes in the files the client wrote.

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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.faultproxy import Fault, FaultProxy
from tools.testbed import (
    Deployment,
    MotoServer,
    PlatformImage,
    PushedArtifact,
    PushedImage,
    TokenServer,
    flip_byte,
    open_filesystem_registry,
    open_s3_registry,
    open_token_registry,
    push_artifact,
    push_image,
    put_blob_in_storage,
)

CREDENTIALS = ("compare", "compare-pass")
BLOBS = r"/blobs/"
# What a pull scenario pushes its image or artifact under, and the platform it asks for.
PULL_TAG = "v1"
PULL_PLATFORM = "linux/amd64"
REF_NAME = "org.opencontainers.image.ref.name"
# A layout's blob, blobs/<alg>/<hex>, as `alg:hex`.
BLOB_NAME = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")


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
    # A pull scenario's: what it pushed under `PULL_TAG`, and the platform wanted.
    image: PushedImage | None = None
    artifact: PushedArtifact | None = None
    platform: str | None = None

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
            "ca_cert": str(self.ca_cert) if self.ca_cert else None,
            "output_dir": str(output_dir),
            "downloads": scenario.get("downloads", 1),
            "timeout": 60,
            "tag": self.notes.get("tag"),
            "pull": scenario.get("pull"),
            "platform": self.platform,
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
        pull = scenario.get("pull")
        if pull is not None:
            setup = _push_for_pull(pull, kind, deployment, repository, scenario["size"])
            yield setup
            return
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
    why = _error_kind(download["error"])
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
