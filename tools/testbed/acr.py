"""An Azure Container Registry on loopback: ACR's front, its token endpoints, and blob storage
in Azurite behind 307s with real SAS tokens. Built on what live ACR sends (recorded traffic).

    with open_acr_deployment() as acr:
        digest = acr.push("prod/bash", data)
        credential = acr.aad_credential()            # a FakeAADCredential the registry accepts
        ...  # a client of acr.url (trusting acr.ca_cert) downloads the blob

The pieces (each a Service on loopback, stopped by whoever started it):

  AcrRegistry    `https://127.0.0.1:PORT`, login server `127.0.0.1:PORT`: the registry API and
                 ACR's `/oauth2/exchange` and `/oauth2/token` (relayed to a TokenServer)
  TokenServer    the tokens: AAD token -> refresh token -> access token (ES256 JWTs)
  BlobEndpoint   `https://127.0.0.2:PORT`, the storage account's blob endpoint as a client
                 sees it (`/<container>//docker/...?<SAS>`), answering in Azure's form
  FaultProxy     between the endpoint and Azurite (`storage_faults`): drips, cuts, statuses
  AzuriteServer  the blob service itself, https, checking every SAS

What the registry answers (as recorded from live ACR in the Azure SDKs' test recordings):

- No or a bad token: 401, `WWW-Authenticate: Bearer realm="https://<login>/oauth2/token",
  service="<login>",scope="repository:<repo>:pull"` (no spaces; `/v2/` has no scope), and
  `{"errors":[{"code":"UNAUTHORIZED",...,"detail":[{"Type":...,"Name":...,"Action":...}]}]}`
  plus a newline; a HEAD gets no body. Every answer carries `Server: openresty`,
  `Docker-Distribution-Api-Version: registry/2.0`, `X-Ms-Correlation-Request-Id` and
  `x-ms-request-id`.
- `POST /oauth2/exchange` and `/oauth2/token`: the TokenServer's answer, chunked; only
  `{"refresh_token": ...}` or `{"access_token": ...}`. A refusal (401) is empty:
  `Content-Length: 0`, no challenge.
- `GET /v2/<repo>/blobs/<digest>`: 307 to
  `https://127.0.0.2:PORT/<regid>-<suffix>//docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data
  ?se=...&sig=...&sp=r&spr=https&sr=b&sv=...&regid=<regid>`, `Content-Type: text/html`, body
  `<a href="...&amp;...">Temporary Redirect</a>.` and two newlines, `Docker-Content-Digest`.
  `HEAD`: 200 from the registry, `Content-Length` and `Docker-Content-Digest`. Unknown: 404
  `BLOB_UNKNOWN`. Manifests are served from memory (`push_manifest`). Paths are
  percent-decoded first (azure-containerregistry sends `prod%2Fbash/blobs/sha256%3A...`).
- Pushes: `POST /v2/<repo>/blobs/uploads/`, `PATCH` and `PUT ?digest=` on the Location, and
  `PUT /v2/<repo>/manifests/<ref>`, with a pull+push token (else a `pull,push` challenge):
  what tools.testbed's push_image, push_artifact and push_manifest do, through `push_auth`.

Knobs (AcrRegistry; `reset()` puts them back): `sas_lifetime` (seconds from the 307 to `se`;
negative for an expired SAS), `sas_permissions` ("r"; e.g. "w" makes storage answer 403
`AuthorizationPermissionMismatch`), `access_token_lifetime`, `throttle()` (429
`TOOMANYREQUESTS` with `Retry-After`), `revoke_access_tokens()`. Storage misbehaves through
`AcrDeployment.storage_faults`: e.g. `Fault.drip(...)` with a short `sas_lifetime` lets a SAS
expire mid-download, so that a resume needs a fresh 307. Requests are recorded (`requests`:
AcrRequest, with query, form fields and headers).

Where it is not live ACR: the login server is `127.0.0.1:PORT` and the storage account
`127.0.0.2:PORT` (path of the account-host form, no account in the path); the 429's message
and the expired SAS's `AuthenticationErrorDetail` when the SAS has no `st` are the testbed's
wording; a SAS URL with the `//` collapsed is refused 403 (the signature names another blob)
where live storage was recorded answering 404.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import hashlib
import html
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, cast
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tools.testbed.aad import AsyncFakeAADCredential, FakeAADCredential
from tools.testbed.azurite import DEV_ACCOUNT, DEV_ACCOUNT_KEY, AzuriteServer
from tools.testbed.blob_endpoint import BlobEndpoint
from tools.testbed.deployments import PushedBlob, PushedFile
from tools.testbed.process import Service, TestbedError, TestbedUnavailable, free_port
from tools.testbed.proxy import RecordedRequest
from tools.testbed.relay import ProxyServer, RelayHandler, ServerThread
from tools.testbed.tls import client_ssl_context, make_tls_cert, server_ssl_context
from tools.testbed.token_server import (
    TESTBED_USER_AGENT,
    BearerAuth,
    TokenServer,
    decode_jwt_claims,
)

if TYPE_CHECKING:
    import ssl

    from azure.storage.blob import ContainerClient

    from tools.faultproxy import FaultProxy

# Every Azure SDK sends this api-version to the token endpoints.
ACR_API_VERSION = "2021-07-01"
# Seconds from a 307 to its SAS's `se`: live ACR's is about 20 minutes.
SAS_LIFETIME = 20 * 60
ACCESS_TOKEN_LIFETIME = 3600
ACR_AAD_SCOPE = "https://containerregistry.azure.net/.default"
MANAGEMENT_AAD_SCOPE = "https://management.azure.com/.default"
# The TokenServer's users: USER pulls everything; an AAD token for it comes from aad_credential.
DEFAULT_USER = "00000000-0000-0000-0000-000000000000"

_ROUTE = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>blobs|manifests)/(?P<reference>[^/]+)$")
_UPLOAD = re.compile(r"^/v2/(?P<name>.+?)/blobs/uploads/(?P<upload>[^/]*)$")
# Distribution's limit for a manifest body, which ACR shares.
_MAX_MANIFEST = 4 << 20
_DIGEST = re.compile(r"^(?P<algorithm>sha256|sha512):(?P<hex>[0-9a-f]{64}|[0-9a-f]{128})$")
_MAX_FORM = 1 << 20
_UNAUTHORIZED_MESSAGE = (
    "authentication required, visit https://aka.ms/acr/authorization for more information."
)


@dataclass(frozen=True)
class AcrRequest:
    """One request as the registry saw it, and its answer's status.

    `path` is as sent, percent-encoding included. `query` and `form` (a POSTed
    `application/x-www-form-urlencoded` body) hold every value as sent, tokens included: it
    is a test's log, not a production one. `testbed` marks the
    testbed's own requests (User-Agent TESTBED_USER_AGENT), which `requests` leaves out.
    """

    method: str
    path: str
    query: Mapping[str, tuple[str, ...]]
    form: Mapping[str, tuple[str, ...]]
    headers: tuple[tuple[str, str], ...]
    status: int
    testbed: bool = False

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def field(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[0] if values else None

    @property
    def api_version(self) -> str | None:
        return self.param("api-version")

    @property
    def grant_type(self) -> str | None:
        return self.field("grant_type")

    @property
    def scopes(self) -> list[str]:
        return [s for value in self.form.get("scope", ()) for s in value.split()]


@dataclass
class _Throttle:
    remaining: int | None
    retry_after: str


@dataclass
class _Manifest:
    digest: str
    media_type: str
    body: bytes


@dataclass
class _Upload:
    repository: str
    path: Path


@dataclass
class _Repository:
    blobs: dict[str, int] = field(default_factory=dict)
    manifests: dict[str, _Manifest] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def blob_name(digest: str) -> str:
    """Where ACR keeps a blob in its storage container: `/docker/registry/v2/blobs/...`.

    The leading `/` is part of the name, which is why the SAS URL's path has `//` after the
    container (collapsing it finds another blob, or none).
    """
    algorithm, _, hex_ = digest.partition(":")
    return f"/docker/registry/v2/blobs/{algorithm}/{hex_[:2]}/{hex_}/data"


def _http_date(moment: float) -> str:
    return format_datetime(datetime.datetime.fromtimestamp(moment, datetime.UTC), usegmt=True)


def _errors(code: str, message: str, detail: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        error["detail"] = detail
    return json.dumps({"errors": [error]}, separators=(",", ":")).encode() + b"\n"


def _file_digest(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with path.open("rb") as f:
        while piece := f.read(1 << 20):
            hasher.update(piece)
    return f"{algorithm}:{hasher.hexdigest()}"


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AcrStorage:
    """The registry's storage account: one container in Azurite, SAS URLs on `endpoint_url`.

    The container is named `<regid>-<suffix>` as ACR's are; blobs are AppendBlobs (as ACR's
    layers are) named by blob_name().
    """

    def __init__(self, azurite: AzuriteServer, endpoint_url: str) -> None:
        self.azurite = azurite
        self.endpoint_url = endpoint_url
        self.regid = secrets.token_hex(16)
        self.container = f"{self.regid}-{secrets.token_hex(5)}"
        self._client: ContainerClient | None = None
        self._stored: set[str] = set()
        self._lock = threading.Lock()

    def create(self) -> None:
        try:
            from azure.storage.blob import BlobServiceClient  # noqa: F401
        except ImportError:
            raise TestbedUnavailable(
                "azure-storage-blob is not installed (pip install -e '.[dev]')"
            ) from None
        self._client = self.azurite.service_client().create_container(self.container)

    @property
    def client(self) -> ContainerClient:
        if self._client is None:
            raise RuntimeError("the storage container has not been created")
        return self._client

    def stored(self, digest: str) -> bool:
        with self._lock:
            return digest in self._stored

    def upload(self, digest: str, data: bytes | Path, *, overwrite: bool = False) -> None:
        """Put `data` (bytes, or a file's contents, streamed) into storage under `digest`.

        The bytes are not checked against the digest: tamper tests plant wrong ones.
        """
        from azure.storage.blob import BlobType

        if not overwrite and self.stored(digest):
            return
        blob = self.client.get_blob_client(blob_name(digest))
        empty = (data.stat().st_size if isinstance(data, Path) else len(data)) == 0
        if empty:
            # upload_blob of no bytes creates no append blob at all: storage would answer 404.
            blob.create_append_blob()
        elif isinstance(data, Path):
            with data.open("rb") as f:
                blob.upload_blob(
                    f,
                    length=data.stat().st_size,
                    blob_type=BlobType.APPENDBLOB,
                    overwrite=True,
                )
        else:
            blob.upload_blob(data, blob_type=BlobType.APPENDBLOB, overwrite=True)
        with self._lock:
            self._stored.add(digest)

    def sas_url(self, digest: str, *, lifetime: float, permissions: str) -> str:
        """The blob's URL on the endpoint with a SAS as ACR writes one (keys in order, then
        `regid`)."""
        from azure.storage.blob import generate_blob_sas

        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=lifetime)
        sas = generate_blob_sas(
            DEV_ACCOUNT,
            self.container,
            blob_name(digest),
            account_key=DEV_ACCOUNT_KEY,
            permission=permissions,
            expiry=expiry,
            protocol="https" if self.endpoint_url.startswith("https:") else None,
        )
        pairs = sorted(sas.split("&"), key=lambda pair: pair.partition("=")[0])
        query = "&".join([*pairs, f"regid={self.regid}"])
        return f"{self.endpoint_url}/{self.container}/{blob_name(digest)}?{query}"


class AcrRegistry(Service):
    """ACR's front on `host`:`port` over https (`tls`: certificate and key), with `tokens`
    (started, its `service` this registry's login server) and `storage` (created).

    See the module docstring for what it answers and the knobs.
    """

    def __init__(
        self,
        tokens: TokenServer,
        storage: AcrStorage,
        *,
        tls: tuple[Path, Path],
        host: str = "127.0.0.1",
        port: int | None = None,
        sas_lifetime: float = SAS_LIFETIME,
    ) -> None:
        self.tokens = tokens
        self.storage = storage
        self.tls = tls
        self.host = host
        self.port = port or free_port(host)
        self.login_server = f"{host}:{self.port}"
        self.url = f"https://{self.login_server}"
        if tokens.service != self.login_server:
            raise ValueError(
                f"the token server's service is {tokens.service!r}, not {self.login_server!r}"
            )
        self._defaults = (sas_lifetime, "r")
        self.sas_lifetime = sas_lifetime
        self.sas_permissions = "r"
        self._lock = threading.Lock()
        self._log: list[AcrRequest] = []
        self._repositories: dict[str, _Repository] = {}
        self._uploads: dict[str, _Upload] = {}
        # Set by start(): upload sessions keep their bytes here until the final PUT.
        self.workdir: Path | None = None
        self._throttle: _Throttle | None = None
        self._issued: set[str] = set()
        self._revoked: set[str] = set()
        self._public_key: ec.EllipticCurvePublicKey | None = None
        self._token_client: httpx.Client | None = None
        self._serving: ServerThread | None = None

    @property
    def realm(self) -> str:
        return f"{self.url}/oauth2/token"

    @property
    def ca_cert(self) -> Path:
        return self.tls[0]

    # The request log.

    @property
    def requests(self) -> list[AcrRequest]:
        """Everything but the testbed's own requests, oldest first."""
        with self._lock:
            return [r for r in self._log if not r.testbed]

    def requests_to(self, path: str, *, method: str | None = None) -> list[AcrRequest]:
        """The requests to `path` (exact, e.g. "/oauth2/exchange"), or under it if it ends
        with a slash ("/v2/")."""
        return [
            r
            for r in self.requests
            if (r.path == path or (path.endswith("/") and r.path.startswith(path)))
            and (method is None or r.method == method)
        ]

    def clear(self) -> None:
        with self._lock:
            self._log.clear()

    def reset(self) -> None:
        """Back to a clean state between tests: log, knobs and revocations; content stays."""
        with self._lock:
            self._log.clear()
            self._throttle = None
            self._revoked.clear()
            self.sas_lifetime, self.sas_permissions = self._defaults

    def record(self, request: AcrRequest) -> None:
        with self._lock:
            self._log.append(request)

    # Knobs.

    @property
    def access_token_lifetime(self) -> int:
        """Seconds to the `exp` of access tokens issued from now on."""
        lifetime = self.tokens.jwt_lifetime
        return lifetime if lifetime is not None else self.tokens.expires_in

    @access_token_lifetime.setter
    def access_token_lifetime(self, seconds: int) -> None:
        self.tokens.jwt_lifetime = seconds

    def throttle(self, times: int | None = 1, *, retry_after: str = "1") -> None:
        """Answer the next `times` authorized blob and manifest requests (None: all, until
        stop_throttling) with 429 TOOMANYREQUESTS and `Retry-After`, as ACR's ReadOps limit does.
        """
        with self._lock:
            self._throttle = _Throttle(times, retry_after)

    def stop_throttling(self) -> None:
        with self._lock:
            self._throttle = None

    def revoke_access_tokens(self) -> None:
        """Refuse every access token issued so far (401, as for an expired one)."""
        with self._lock:
            self._revoked |= self._issued

    def take_throttle(self) -> _Throttle | None:
        """Count one request against the throttle; the throttle if it hits this request."""
        with self._lock:
            throttle = self._throttle
            if throttle is None:
                return None
            if throttle.remaining is not None:
                throttle.remaining -= 1
                if throttle.remaining <= 0:
                    self._throttle = None
            return throttle

    # Content.

    def _repository(self, name: str) -> _Repository:
        with self._lock:
            return self._repositories.setdefault(name, _Repository())

    def add_blob(self, repository: str, data: bytes | Path, *, algorithm: str = "sha256") -> str:
        """Upload `data` (bytes, or a file, streamed) to storage and link it to `repository`."""
        if isinstance(data, Path):
            digest, size = _file_digest(data, algorithm), data.stat().st_size
        else:
            digest, size = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}", len(data)
        self.storage.upload(digest, data)
        with self._lock:
            self._repositories.setdefault(repository, _Repository()).blobs[digest] = size
        return digest

    # Pushes over HTTP (POST, PATCH, PUT, as distribution's clients do them).

    def start_upload(self, repository: str) -> str:
        if self.workdir is None:
            raise RuntimeError("the registry is not running")
        upload = uuid.uuid4().hex
        path = self.workdir / f"upload-{upload}"
        path.touch()
        with self._lock:
            self._uploads[upload] = _Upload(repository, path)
        return upload

    def upload_file(self, repository: str, upload: str) -> Path | None:
        """Where the bytes of `upload` accumulate; None for an unknown upload."""
        with self._lock:
            found = self._uploads.get(upload)
        return found.path if found is not None and found.repository == repository else None

    def finish_upload(self, repository: str, upload: str, digest: str) -> bool:
        """Store the upload's bytes as `digest` if they hash to it; False (and the upload
        kept) if they do not."""
        path = self.upload_file(repository, upload)
        match = _DIGEST.match(digest)
        if path is None or match is None or _file_digest(path, match["algorithm"]) != digest:
            return False
        self.add_blob(repository, path, algorithm=match["algorithm"])
        with self._lock:
            del self._uploads[upload]
        path.unlink()
        return True

    def add_manifest(
        self, repository: str, body: bytes, media_type: str, *, tag: str | None = None
    ) -> str:
        digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
        with self._lock:
            repo = self._repositories.setdefault(repository, _Repository())
            repo.manifests[digest] = _Manifest(digest, media_type, body)
            if tag is not None:
                repo.tags[tag] = digest
        return digest

    def blob_size(self, repository: str, digest: str) -> int | None:
        with self._lock:
            repo = self._repositories.get(repository)
            return repo.blobs.get(digest) if repo else None

    def manifest(self, repository: str, reference: str) -> _Manifest | None:
        with self._lock:
            repo = self._repositories.get(repository)
            if repo is None:
                return None
            digest = repo.tags.get(reference, reference)
            return repo.manifests.get(digest)

    # Tokens.

    def note_issued(self, access_token: str) -> None:
        with contextlib.suppress(ValueError, IndexError, binascii.Error):
            jti = decode_jwt_claims(access_token).get("jti")
            if isinstance(jti, str):
                with self._lock:
                    self._issued.add(jti)

    def granted(self, authorization: str | None, repository: str | None, action: str) -> bool:
        """Whether `authorization` is a live bearer token of ours for `action` on
        `repository` (None: any valid token, as `/v2/` wants)."""
        if authorization is None or not authorization.lower().startswith("bearer "):
            return False
        claims = self._verified_claims(authorization[7:].strip())
        if claims is None:
            return False
        if repository is None:
            return True
        return any(
            entry.get("type") == "repository"
            and entry.get("name") == repository
            and action in entry.get("actions", ())
            for entry in claims.get("access", ())
        )

    def _verified_claims(self, token: str) -> dict[str, Any] | None:
        try:
            header_b64, payload_b64, signature_b64 = token.split(".")
            signature = _b64url_decode(signature_b64)
            claims: dict[str, Any] = json.loads(_b64url_decode(payload_b64))
        except (ValueError, binascii.Error):
            return None
        if len(signature) != 64 or self._public_key is None:
            return None
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        try:
            self._public_key.verify(
                der, f"{header_b64}.{payload_b64}".encode(), ec.ECDSA(hashes.SHA256())
            )
        except InvalidSignature:
            return None
        if claims.get("aud") != self.login_server or not isinstance(claims.get("exp"), int):
            return None
        if claims["exp"] <= time.time():
            return None
        with self._lock:
            if claims.get("jti") in self._revoked:
                return None
        return claims

    def token_client(self) -> httpx.Client:
        if self._token_client is None:
            raise RuntimeError("the registry is not running")
        return self._token_client

    # Lifecycle.

    def start(self) -> Self:
        self.workdir = Path(tempfile.mkdtemp(prefix="acr-blob-acr-uploads-"))
        cert = x509.load_pem_x509_certificate(self.tokens.cert_path.read_bytes())
        self._public_key = cast(ec.EllipticCurvePublicKey, cert.public_key())
        self._token_client = httpx.Client(trust_env=False, timeout=30.0)
        try:
            server = _AcrServer((self.host, self.port), self, server_ssl_context(*self.tls))
            self._serving = ServerThread(server, name=f"acr-{self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._serving is not None:
            self._serving.stop()
            self._serving = None
        if self._token_client is not None:
            self._token_client.close()
            self._token_client = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


class _AcrServer(ProxyServer):
    def __init__(
        self, address: tuple[str, int], registry: AcrRegistry, context: ssl.SSLContext
    ) -> None:
        self.registry = registry
        super().__init__(address, _Handler, context)


class _Handler(RelayHandler):
    def _handle(self) -> None:
        registry = cast(_AcrServer, self.server).registry
        parts = urlsplit(self.path)
        # One handler serves every request of a kept-alive connection: per-request state here.
        self._acr_registry = registry
        self._body_read = False
        self._query = parts.query
        self._form: dict[str, list[str]] = {}
        if parts.path.startswith("/oauth2/"):
            self._oauth(registry)
        else:
            # As ACR's front does: azure-containerregistry sends `prod%2Fbash/blobs/sha256%3A...`.
            self._registry(registry, unquote(parts.path))

    def _record(self, status: int) -> None:
        # Before the answer leaves: a client that has its answer finds its request logged.
        parts = urlsplit(self.path)
        self._acr_registry.record(
            AcrRequest(
                method=self.command,
                path=parts.path,
                query={
                    k: tuple(v) for k, v in parse_qs(parts.query, keep_blank_values=True).items()
                },
                form={k: tuple(v) for k, v in self._form.items()},
                headers=tuple(self.headers.items()),
                status=status,
                testbed=self.headers.get("User-Agent") == TESTBED_USER_AGENT,
            )
        )

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    # Answers.

    def _common_headers(self) -> list[tuple[str, str]]:
        return [
            ("Server", "openresty"),
            ("Date", _http_date(time.time())),
            ("Docker-Distribution-Api-Version", "registry/2.0"),
            ("X-Ms-Correlation-Request-Id", str(uuid.uuid4())),
            ("x-ms-request-id", str(uuid.uuid4())),
            ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
        ]

    def _send(
        self,
        status: int,
        body: bytes,
        headers: Iterable[tuple[str, str]] = (),
        *,
        content_type: str | None = "application/json; charset=utf-8",
        chunked: bool = False,
    ) -> int:
        self._record(status)
        self.send_response_only(status)
        for name, value in self._common_headers():
            self.send_header(name, value)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        if chunked and self.command != "HEAD":
            self.send_header("Transfer-Encoding", "chunked")
        elif not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        if self.may_have_body() and not self._body_read:
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            if chunked:
                framed = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
                self.wfile.write(framed + b"0\r\n\r\n")
            else:
                self.wfile.write(body)
        return status

    def _read_body(self, limit: int = _MAX_FORM) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            return b""
        self._body_read = True
        return self.rfile.read(length) if length else b""

    def _challenge(
        self, registry: AcrRegistry, repository: str | None, actions: str = "pull"
    ) -> int:
        challenge = f'Bearer realm="{registry.realm}",service="{registry.login_server}"'
        detail: Any = None
        if repository is not None:
            challenge += f',scope="repository:{repository}:{actions}"'
            detail = [
                {"Type": "repository", "Name": repository, "Action": action}
                for action in actions.split(",")
            ]
        body = _errors("UNAUTHORIZED", _UNAUTHORIZED_MESSAGE, detail)
        return self._send(401, body, [("WWW-Authenticate", challenge)])

    # /oauth2/*

    def _oauth(self, registry: AcrRegistry) -> int:
        body = self._read_body()
        content_type = self.headers.get("Content-Type", "")
        if self.command == "POST" and content_type.startswith("application/x-www-form-urlencoded"):
            self._form = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        forwarded = {
            name: value
            for name in ("Content-Type", "User-Agent", "Authorization")
            if (value := self.headers.get(name)) is not None
        }
        try:
            answer = registry.token_client().request(
                self.command,
                registry.tokens.url + self.path,
                content=body,
                headers=forwarded,
            )
        except httpx.HTTPError as error:
            return self._send(502, _errors("UNAVAILABLE", f"token server: {error}"))
        if answer.status_code == 401:
            # ACR's refusals of an exchange or a token: empty, and no challenge.
            return self._send(401, b"", content_type=None)
        if answer.status_code == 200:
            with contextlib.suppress(ValueError):
                token = answer.json().get("access_token")
                if isinstance(token, str):
                    registry.note_issued(token)
            return self._send(200, answer.content, chunked=True)
        return self._send(
            answer.status_code,
            answer.content,
            content_type=answer.headers.get("Content-Type", "application/json"),
        )

    # /v2/...

    def _registry(self, registry: AcrRegistry, path: str) -> int:
        authorization = self.headers.get("Authorization")
        if path in ("/v2", "/v2/"):
            if not registry.granted(authorization, None, "pull"):
                return self._challenge(registry, None)
            return self._send(200, b"{}")
        upload = _UPLOAD.match(path)
        if upload is not None:
            if not registry.granted(authorization, upload["name"], "push"):
                return self._challenge(registry, upload["name"], "pull,push")
            return self._upload(registry, upload["name"], upload["upload"])
        route = _ROUTE.match(path)
        if route is None:
            return self._send(404, _errors("NOT_FOUND", "404 page not found"))
        name, kind, reference = route["name"], route["kind"], route["reference"]
        if kind == "manifests" and self.command == "PUT":
            if not registry.granted(authorization, name, "push"):
                return self._challenge(registry, name, "pull,push")
            return self._put_manifest(registry, name, reference)
        if self.command not in ("GET", "HEAD"):
            return self._send(405, _errors("UNSUPPORTED", "The operation is unsupported."))
        if not registry.granted(authorization, name, "pull"):
            return self._challenge(registry, name)
        throttle = registry.take_throttle()
        if throttle is not None:
            body = _errors("TOOMANYREQUESTS", "too many requests, please retry later")
            return self._send(429, body, [("Retry-After", throttle.retry_after)])
        if kind == "blobs":
            return self._blob(registry, name, reference)
        return self._manifest(registry, name, reference)

    def _blob(self, registry: AcrRegistry, repository: str, digest: str) -> int:
        if _DIGEST.match(digest) is None:
            return self._send(400, _errors("DIGEST_INVALID", "provided digest did not match"))
        size = registry.blob_size(repository, digest)
        if size is None:
            return self._send(404, _errors("BLOB_UNKNOWN", "blob unknown to registry"))
        if self.command == "HEAD":
            return self._send(
                200,
                b"",
                [("Content-Length", str(size)), ("Docker-Content-Digest", digest)],
                content_type="application/octet-stream",
            )
        location = registry.storage.sas_url(
            digest, lifetime=registry.sas_lifetime, permissions=registry.sas_permissions
        )
        body = f'<a href="{html.escape(location, quote=True)}">Temporary Redirect</a>.\n\n'
        return self._send(
            307,
            body.encode(),
            [("Location", location), ("Docker-Content-Digest", digest)],
            content_type="text/html",
        )

    def _upload(self, registry: AcrRegistry, repository: str, upload: str) -> int:
        if self.command == "POST" and not upload:
            return self._upload_status(202, repository, registry.start_upload(repository), 0)
        path = registry.upload_file(repository, upload)
        if path is None:
            return self._send(
                404, _errors("BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry")
            )
        if self.command not in ("PATCH", "PUT"):
            return self._send(405, _errors("UNSUPPORTED", "The operation is unsupported."))
        with path.open("ab") as f:
            for piece in self.request_body():
                f.write(piece)
        self._body_read = True
        size = path.stat().st_size
        if self.command == "PATCH":
            return self._upload_status(202, repository, upload, size)
        digest = parse_qs(self._query).get("digest", [""])[0]
        if not registry.finish_upload(repository, upload, digest):
            return self._send(400, _errors("DIGEST_INVALID", "provided digest did not match"))
        return self._send(
            201,
            b"",
            [
                ("Location", f"/v2/{repository}/blobs/{digest}"),
                ("Docker-Content-Digest", digest),
            ],
            content_type=None,
        )

    def _upload_status(self, status: int, repository: str, upload: str, size: int) -> int:
        return self._send(
            status,
            b"",
            [
                ("Location", f"/v2/{repository}/blobs/uploads/{upload}?_state={upload}"),
                ("Docker-Upload-UUID", upload),
                ("Range", f"0-{max(size - 1, 0)}"),
            ],
            content_type=None,
        )

    def _put_manifest(self, registry: AcrRegistry, repository: str, reference: str) -> int:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_MANIFEST:
            return self._send(413, _errors("MANIFEST_INVALID", "manifest too large"))
        body = self._read_body(_MAX_MANIFEST)
        media_type = self.headers.get("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
        by_digest = _DIGEST.match(reference) is not None
        if by_digest and reference != digest:
            return self._send(400, _errors("DIGEST_INVALID", "provided digest did not match"))
        registry.add_manifest(repository, body, media_type, tag=None if by_digest else reference)
        return self._send(
            201,
            b"",
            [
                ("Location", f"/v2/{repository}/manifests/{digest}"),
                ("Docker-Content-Digest", digest),
            ],
            content_type=None,
        )

    def _manifest(self, registry: AcrRegistry, repository: str, reference: str) -> int:
        manifest = registry.manifest(repository, reference)
        if manifest is None:
            return self._send(404, _errors("MANIFEST_UNKNOWN", "manifest unknown"))
        return self._send(
            200,
            manifest.body,
            [("Docker-Content-Digest", manifest.digest), ("ETag", f'"{manifest.digest}"')],
            content_type=manifest.media_type,
        )


@dataclass(frozen=True)
class AcrDeployment:
    """A running ACR: `registry` (the front), `tokens`, `blob_endpoint` (the storage account
    as clients see it), `storage_faults` (a FaultProxy between it and Azurite), `azurite`.

    One self-signed certificate (`ca_cert`, `verify`) serves the registry, the endpoint and
    Azurite. `aad_token` is an AAD token the exchange accepts for DEFAULT_USER.
    """

    registry: AcrRegistry
    tokens: TokenServer
    blob_endpoint: BlobEndpoint
    storage_faults: FaultProxy
    azurite: AzuriteServer
    aad_token: str

    @property
    def url(self) -> str:
        return self.registry.url

    @property
    def login_server(self) -> str:
        return self.registry.login_server

    @property
    def ca_cert(self) -> Path:
        return self.registry.ca_cert

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """For httpx's `verify=`."""
        return client_ssl_context(self.ca_cert)

    def blob_url(self, repository: str, digest: str) -> str:
        return f"{self.url}/v2/{repository}/blobs/{digest}"

    def manifest_url(self, repository: str, reference: str) -> str:
        return f"{self.url}/v2/{repository}/manifests/{reference}"

    # Credentials.

    def add_aad_token(self, token: str | None = None, *, user: str = DEFAULT_USER) -> str:
        """Make the exchange accept another AAD token (random if None) for `user`."""
        token = token or f"aad-{secrets.token_urlsafe(16)}"
        self.tokens.aad_tokens[token] = user
        return token

    def aad_credential(
        self, token: str | None = None, *, lifetime: int = 3600
    ) -> FakeAADCredential:
        """A fake AAD credential that hands out `token` (default: `aad_token`)."""
        return FakeAADCredential(token or self.aad_token, lifetime=lifetime)

    def async_aad_credential(
        self, token: str | None = None, *, lifetime: int = 3600
    ) -> AsyncFakeAADCredential:
        return AsyncFakeAADCredential(token or self.aad_token, lifetime=lifetime)

    def access_token(self, repository: str, *actions: str) -> str:
        """An access token for `repository` (default: pull) as the registry would issue it."""
        token = self.tokens.mint_access_token(
            f"repository:{repository}:{','.join(actions or ('pull',))}", user=DEFAULT_USER
        )
        self.registry.note_issued(token)
        return token

    def push_auth(self, repository: str) -> httpx.Auth:
        """A pull+push token of the token server's admin: what push_image and the other
        push helpers of tools.testbed send (their requests count as the testbed's own)."""
        token = self.tokens.mint_access_token(
            f"repository:{repository}:pull,push", user=self.tokens.admin[0]
        )
        return BearerAuth(token)

    # Pushes: straight into storage and the registry's index, no HTTP. push_image,
    # push_artifact and push_manifest (tools/testbed/images.py) push over HTTP instead.

    def push(self, repository: str, data: bytes, *, algorithm: str = "sha256") -> str:
        return self.registry.add_blob(repository, data, algorithm=algorithm)

    def push_file(self, repository: str, path: Path, *, algorithm: str = "sha256") -> str:
        return self.registry.add_blob(repository, path, algorithm=algorithm)

    def push_random(self, repository: str, size: int) -> PushedBlob:
        data = os.urandom(size)
        return PushedBlob(self.push(repository, data), data)

    def push_random_file(self, repository: str, size: int, path: Path) -> PushedFile:
        """Write `size` random bytes to `path` and push them, never holding them all in memory."""
        with path.open("wb") as f:
            remaining = size
            while remaining > 0:
                piece = os.urandom(min(1 << 20, remaining))
                f.write(piece)
                remaining -= len(piece)
        return PushedFile(self.push_file(repository, path), path)

    def push_manifest(
        self, repository: str, body: bytes, media_type: str, *, tag: str | None = None
    ) -> str:
        """Serve `body` as a manifest of `repository` by its digest (and `tag`); no checks."""
        return self.registry.add_manifest(repository, body, media_type, tag=tag)

    def tamper(self, digest: str, data: bytes) -> None:
        """Replace the stored bytes of a pushed blob; the registry still names `digest`."""
        self.registry.storage.upload(digest, data, overwrite=True)

    # Records.

    @property
    def storage_requests(self) -> list[RecordedRequest]:
        """What reached the blob endpoint with a SAS: clients following 307s."""
        return self.blob_endpoint.sas_requests

    def reset(self) -> None:
        """Back to a clean state between tests (knobs, logs, faults); content stays."""
        self.registry.reset()
        self.tokens.reset()
        self.blob_endpoint.reset()
        self.storage_faults.reset()


@contextlib.contextmanager
def open_acr_deployment(
    *,
    host: str = "127.0.0.1",
    storage_host: str = "127.0.0.2",
    sas_lifetime: float = SAS_LIFETIME,
    access_token_lifetime: int = ACCESS_TOKEN_LIFETIME,
    tenant: str | None = None,
    users: Mapping[str, str] | None = None,
) -> Iterator[AcrDeployment]:
    """Start everything an AcrDeployment is (see the module docstring), stop it afterwards.

    `tenant` makes the exchange refuse another tenant; `users` are extra TokenServer users
    (name: password) for Basic or password-grant logins.
    """
    # Imported here: tools.faultproxy imports this package, which imports this module.
    from tools.faultproxy import FaultProxy

    with contextlib.ExitStack() as stack:
        directory = Path(tempfile.mkdtemp(prefix="acr-blob-acr-"))
        stack.callback(shutil.rmtree, directory, True)
        cert, key = make_tls_cert(directory, "acr")
        azurite = stack.enter_context(AzuriteServer(tls=(cert, key)))
        faults = stack.enter_context(FaultProxy(azurite.url, upstream_ssl=azurite.ssl_context))
        endpoint = stack.enter_context(
            BlobEndpoint(faults.url, host=storage_host, ssl_context=server_ssl_context(cert, key))
        )
        port = free_port(host)
        aad_token = f"aad-{secrets.token_urlsafe(16)}"
        tokens = stack.enter_context(
            TokenServer(
                service=f"{host}:{port}",
                issuer="Azure Container Registry",
                users=users,
                aad_tokens={aad_token: DEFAULT_USER},
                tenant=tenant,
                expires_in=access_token_lifetime,
                jwt_lifetime=access_token_lifetime,
                host=host,
            )
        )
        storage = AcrStorage(azurite, endpoint.url)
        try:
            storage.create()
        except Exception as error:
            if isinstance(error, TestbedUnavailable):
                raise
            raise TestbedError(
                f"creating the storage container in Azurite failed: {error}; log tail:\n"
                f"{azurite.log_tail()}"
            ) from error
        registry = stack.enter_context(
            AcrRegistry(
                tokens, storage, tls=(cert, key), host=host, port=port, sas_lifetime=sas_lifetime
            )
        )
        yield AcrDeployment(registry, tokens, endpoint, faults, azurite, aad_token)
