"""Ready-made combinations of the pieces: a registry as a client sees it, and how to start one."""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol
from urllib.parse import quote, urlsplit

import httpx

from tools.testbed.motoserver import MotoServer
from tools.testbed.process import TestbedError
from tools.testbed.proxy import StorageProxy
from tools.testbed.push import push_blob, push_blob_file
from tools.testbed.registry import RegistryProxy, RegistryServer, TokenAuth
from tools.testbed.storage import layer_link_path
from tools.testbed.tls import client_ssl_context, make_tls_cert
from tools.testbed.token_server import TESTBED_USER_AGENT, BearerAuth, TokenServer, fetch_token


class PushedBlob(NamedTuple):
    digest: str
    data: bytes


class PushedFile(NamedTuple):
    digest: str
    path: Path


@dataclass(frozen=True)
class Deployment:
    """A running registry plus what a test needs to talk to it and to its storage.

    `auth` is the Basic credentials a client needs (None: anonymous): the registry's own with
    htpasswd, the token server's with token auth. `proxy` is the StorageProxy that the
    registry's redirects point at (None: filesystem storage, no redirects). `ca_cert` is the
    self-signed certificate to trust for an https registry. `token_server` is set on a
    token-auth registry; pushes then go through its admin user, unlogged (see TokenServer).
    """

    server: RegistryServer
    auth: tuple[str, str] | None = None
    proxy: StorageProxy | None = None
    token_server: TokenServer | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def root(self) -> Path | None:
        return self.server.root

    @property
    def ca_cert(self) -> Path | None:
        return self.server.ca_cert

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """For httpx's `verify=`."""
        return client_ssl_context(self.ca_cert)

    def blob_url(self, repository: str, digest: str) -> str:
        return f"{self.url}/v2/{repository}/blobs/{digest}"

    def push_token(self, repository: str) -> str:
        """A pull+push token for `repository` from the token server, as its admin user."""
        token = self.server.token
        if self.token_server is None or token is None:
            raise ValueError("not a token-auth registry")
        return fetch_token(
            token.realm,
            service=token.service,
            scopes=[f"repository:{repository}:pull,push"],
            auth=self.token_server.admin,
            user_agent=TESTBED_USER_AGENT,
        )

    def push_auth(self, repository: str) -> httpx.Auth | tuple[str, str] | None:
        """What a push to `repository` authenticates with: `auth`, or on a token-auth
        registry a pull+push token of the token server's admin (fetched now)."""
        if self.token_server is not None:
            return BearerAuth(self.push_token(repository))
        return self.auth

    def push(self, repository: str, data: bytes, *, algorithm: str = "sha256") -> str:
        auth = self.push_auth(repository)
        return push_blob(
            self.url, repository, data, auth=auth, verify=self.verify, algorithm=algorithm
        )

    def push_file(self, repository: str, path: Path, *, algorithm: str = "sha256") -> str:
        auth = self.push_auth(repository)
        return push_blob_file(
            self.url, repository, path, auth=auth, verify=self.verify, algorithm=algorithm
        )

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


@dataclass(frozen=True, kw_only=True)
class Mirror(Deployment):
    """A pull-through cache (distribution's proxy mode) in front of another registry.

    Anonymous to its clients (`auth` is None), filesystem storage (`root`), read-only: the
    push methods raise. `origin` is the registry it mirrors (None when it was started on a bare
    URL), `upstream` the URL it fetches from, the origin's own or e.g. a FaultProxy's.

    What distribution 2.8 does in this mode: an uncached blob is streamed from the upstream
    whole, whatever the Range (200, no Content-Range), while a background copy of the same
    blob (a second upstream GET) fills the cache; a HEAD of an uncached blob starts that same
    fetch. A cached blob is served from `root` like any registry's (Range honoured, 206).
    Each upstream fetch is preceded by a `GET /v2/` ping of the upstream. Query parameters
    (`?ns=...`) are ignored and not forwarded. A blob requested again while its first copy is
    still running is streamed from the upstream again; `wait_cached` waits that out.
    """

    origin: Deployment | None
    upstream: str

    def cached(self, repository: str, digest: str) -> bool:
        """Whether the mirror's storage holds `digest` for `repository` (committed and linked)."""
        root = self.root
        return root is not None and layer_link_path(root, repository, digest).is_file()

    def wait_cached(self, repository: str, digest: str, timeout: float = 10.0) -> None:
        """Wait for the background copy of a first fetch to land in the mirror's storage."""
        deadline = time.monotonic() + timeout
        while not self.cached(repository, digest):
            if time.monotonic() > deadline:
                raise TestbedError(
                    f"{digest} not cached by the mirror after {timeout:.0f} s; log tail:\n"
                    f"{self.server.log_tail()}"
                )
            time.sleep(0.01)

    def push(self, repository: str, data: bytes, *, algorithm: str = "sha256") -> str:
        raise TestbedError("a mirror is read-only (405 UNSUPPORTED): push to its origin")

    def push_file(self, repository: str, path: Path, *, algorithm: str = "sha256") -> str:
        raise TestbedError("a mirror is read-only (405 UNSUPPORTED): push to its origin")


class PushTarget(Protocol):
    """What the push helpers (push_image, push_artifact, push_manifest) need of a registry:
    a Deployment or an AcrDeployment."""

    @property
    def url(self) -> str: ...

    @property
    def verify(self) -> ssl.SSLContext | bool: ...

    def push_auth(self, repository: str) -> httpx.Auth | tuple[str, str] | None: ...


class BlobFactory(Protocol):
    """The type of the tests' `blob_factory` fixture (the repository defaults to the test's)."""

    def __call__(
        self, deployment: Deployment, size: int, repository: str | None = None
    ) -> PushedBlob: ...


class BlobFileFactory(Protocol):
    """The type of the tests' `blob_file_factory` fixture."""

    def __call__(
        self, deployment: Deployment, size: int, repository: str | None = None
    ) -> PushedFile: ...


class MirrorFactory(Protocol):
    """The type of the tests' `mirror_factory` fixture: a running Mirror of a Deployment (or of
    an anonymous registry's URL), stopped at the end of the test (see open_mirror)."""

    def __call__(self, origin: Deployment | str, *, upstream_url: str | None = None) -> Mirror: ...


@contextlib.contextmanager
def _tls_files(tls: bool) -> Iterator[tuple[Path, Path] | None]:
    if not tls:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="acr-blob-tls-") as directory:
        yield make_tls_cert(Path(directory))


@contextlib.contextmanager
def open_filesystem_registry(
    *, auth: tuple[str, str] | None = None, tls: bool = False
) -> Iterator[Deployment]:
    """A registry that serves blobs itself from a folder (`Deployment.root`)."""
    with contextlib.ExitStack() as stack:
        cert_and_key = stack.enter_context(_tls_files(tls))
        server = stack.enter_context(RegistryServer(htpasswd=auth, tls=cert_and_key))
        yield Deployment(server, auth=auth)


@contextlib.contextmanager
def open_s3_registry(
    moto: MotoServer,
    *,
    auth: tuple[str, str] | None = None,
    tls: bool = False,
    proxy_host: str = "127.0.0.2",
) -> Iterator[Deployment]:
    """A registry on moto whose blob GETs answer 307 to presigned URLs on a StorageProxy.

    With `tls` the registry itself is https (self-signed) while storage stays plain http,
    so its redirects go from https to http.
    """
    with contextlib.ExitStack() as stack:
        proxy = stack.enter_context(StorageProxy(moto.url, host=proxy_host))
        cert_and_key = stack.enter_context(_tls_files(tls))
        server = stack.enter_context(
            RegistryServer(htpasswd=auth, s3=moto, s3_endpoint=proxy.url, tls=cert_and_key)
        )
        yield Deployment(server, auth=auth, proxy=proxy)


@contextlib.contextmanager
def open_token_registry(
    token_server: TokenServer,
    *,
    s3: MotoServer | None = None,
    auth: tuple[str, str] | None = None,
    realm: str | None = None,
    tls: bool = False,
    proxy_host: str = "127.0.0.2",
) -> Iterator[Deployment]:
    """A registry that wants bearer tokens from `token_server` (started by the caller).

    Filesystem storage, or with `s3` moto storage whose blob GETs answer 307 to presigned URLs
    on a StorageProxy (as open_s3_registry). `auth` is what the Deployment hands clients as
    their credentials for the token server; `realm` replaces the challenge's realm, e.g.
    `token_server.acr_realm` to send clients to ACR's `/oauth2/token`.
    """
    token = TokenAuth(
        realm=realm or token_server.realm,
        service=token_server.service,
        issuer=token_server.issuer,
        rootcertbundle=token_server.cert_path,
    )
    with contextlib.ExitStack() as stack:
        proxy = None
        if s3 is not None:
            proxy = stack.enter_context(StorageProxy(s3.url, host=proxy_host))
        cert_and_key = stack.enter_context(_tls_files(tls))
        server = stack.enter_context(
            RegistryServer(
                s3=s3,
                s3_endpoint=proxy.url if proxy else None,
                tls=cert_and_key,
                token=token,
            )
        )
        yield Deployment(server, auth=auth, proxy=proxy, token_server=token_server)


def _with_userinfo(url: str, username: str, password: str) -> str:
    parts = urlsplit(url)
    userinfo = f"{quote(username, safe='')}:{quote(password, safe='')}"
    return parts._replace(netloc=f"{userinfo}@{parts.netloc}").geturl()


def mirror_proxy_config(origin: Deployment | None, upstream: str) -> RegistryProxy:
    """The `proxy` section for a mirror of `origin` that fetches from `upstream`.

    A token-auth origin: the origin's client credentials (`Deployment.auth`), which distribution
    hands to the token realm it finds in the upstream's challenge. A Basic-auth origin: the
    same credentials, and in the URL too, since distribution 2.8 has no Basic handler for the
    upstream and its Go HTTP client sends a URL's userinfo as Basic auth instead.
    """
    if origin is None or origin.auth is None:
        return RegistryProxy(upstream)
    username, password = origin.auth
    if origin.server.htpasswd is not None:
        return RegistryProxy(_with_userinfo(upstream, username, password), username, password)
    return RegistryProxy(upstream, username, password)


@contextlib.contextmanager
def open_mirror(origin: Deployment | str, *, upstream_url: str | None = None) -> Iterator[Mirror]:
    """A pull-through cache of `origin` (a Deployment, or the URL of an anonymous registry).

    The mirror fetches from `upstream_url` (default: the origin's URL), e.g. a FaultProxy in
    front of the origin, with the origin's credentials if it has any (see mirror_proxy_config).
    The upstream must be plain http: the mirror's Go client trusts only the system's CAs.
    """
    deployment = origin if isinstance(origin, Deployment) else None
    default = origin.url if isinstance(origin, Deployment) else origin
    upstream = (upstream_url or default).rstrip("/")
    if urlsplit(upstream).scheme != "http":
        raise ValueError(f"a mirror's upstream must be plain http://, got {upstream!r}")
    proxy = mirror_proxy_config(deployment, upstream)
    with RegistryServer(proxy=proxy) as server:
        yield Mirror(server, origin=deployment, upstream=upstream)
