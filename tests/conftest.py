"""Real registries on loopback for the tests, started on first use and stopped at session end.

Fixtures (each registry is a tools.testbed.Deployment: .url, .auth, .verify, .ca_cert, .root,
.proxy, .push(), .push_random(), .blob_url()):
  registry_binary_path  docker-registry's path; skips (fails under CI) when it is missing
  registry            anonymous, filesystem storage (.root is the storage folder)
  basic_registry      filesystem storage, Basic auth; .auth == BASIC_AUTH
  s3_registry         anonymous, S3 storage on moto; blob GET/HEAD answer 307 to .proxy
  s3_basic_registry   as s3_registry, with Basic auth (.auth): for "credentials never reach
                      storage" tests, read .proxy.presigned_requests
  tls_s3_registry     https (self-signed, trust .ca_cert or pass .verify), Basic auth, S3
                      storage over plain http: redirects go from https to http
  moto_server         the one moto S3 server the S3 registries share (separate prefixes)
  token_server        the session's TokenServer (Docker token protocol + ACR OAuth2): users
                      TOKEN_AUTH and TOKEN_ADMIN, public repositories "public/*", AAD token
                      AAD_TOKEN for alice; .url, .realm, .acr_realm, .cert_path, .requests,
                      .count(), .clear(), .expires_in, .token_field, ...
  fresh_token_server  the same, reset (log, failure mode, expiry settings) for this test
  token_registry      filesystem storage, bearer tokens from token_server; .auth == TOKEN_AUTH
                      (alice, for the token server), .token_server; pushes use the admin user
  token_s3_registry   as token_registry on S3 storage: blob GET/HEAD answer 307 to .proxy
  public_repository   a repository name unique to the test under public/ (anonymous pull)
  repository          a repository name unique to the test
  blob_factory        push random bytes: blob_factory(deployment, size) -> (digest, data)
  blob_file_factory   same through a file, streamed: -> (digest, path), for large blobs
  fault_proxy         fault_proxy(deployment_or_url) -> a running tools.faultproxy.FaultProxy
                      in front of it (https registries are trusted through .verify): point
                      the client at its .url, add faults with .add(Fault...), read .requests
                      and .firings; stopped at the end of the test
  proxied             a fault proxy in front of `registry`
  registry_mirror     a pull-through mirror (tools.testbed.Mirror: a read-only, anonymous
                      Deployment with .origin, .upstream, .cached(), .wait_cached()) of
                      `registry`
  basic_registry_mirror  the same of `basic_registry`: anonymous itself, it fetches with
                      BASIC_AUTH
  mirror_factory      mirror_factory(deployment_or_url, upstream_url=None) -> a running Mirror;
                      upstream_url e.g. a fault proxy's URL in front of the origin; stopped at
                      the end of the test
  skopeo_path         skopeo's path; skips (fails under CI) when it is missing
  acr_deployment      an Azure Container Registry (tools.testbed.AcrDeployment), one per
                      session, reset (knobs, logs, storage faults) for each test: .url
                      (https, trust .ca_cert or pass .verify), .login_server, .aad_token,
                      .aad_credential(), .push(), .push_manifest(), .registry (its knobs
                      and .requests), .tokens, .blob_endpoint (the storage account, with
                      .sas_requests), .storage_faults (a FaultProxy in front of Azurite);
                      push_image() and the other push helpers take it too; skips (fails
                      under CI) when Azurite (tools/testbed/install-azurite.sh) is missing
  mode                "sync" or "async": every test that takes it runs with both clients
                      (tests.drivers.Driver)

The S3 fixtures reset their proxy (request log, failure and cut modes) before every test; the
token registries reset the token server too. The testbed's own pushes fetch their tokens with
User-Agent TESTBED_USER_AGENT: the token server leaves them out of .requests and .count(). The proxy
also carries the registry's own header-signed storage requests: filter on `.presigned`.
Tests marked `slow` run only with --run-slow.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.drivers import MODES
from tools.faultproxy import FaultProxy, FaultProxyFactory
from tools.testbed import (
    AcrDeployment,
    BlobFactory,
    BlobFileFactory,
    Deployment,
    Mirror,
    MirrorFactory,
    MotoServer,
    PushedBlob,
    PushedFile,
    TestbedUnavailable,
    TokenServer,
    azurite_binary,
    open_acr_deployment,
    open_filesystem_registry,
    open_mirror,
    open_s3_registry,
    open_token_registry,
    registry_binary,
    skopeo_binary,
)

BASIC_AUTH = ("alice", "s3cret-pass")
# The token server's users: alice may pull everything, admin may also push (the testbed's
# pushes use it); AAD_TOKEN is what a fake Azure AD credential hands out for alice.
TOKEN_AUTH = ("alice", "s3cret-pass")
TOKEN_ADMIN = ("admin", "admin-s3cret")
AAD_TOKEN = "aad-token-for-alice"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


def skip_or_fail(reason: str) -> NoReturn:
    """A missing tool skips on a developer's machine but must not pass silently in CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def registry_binary_path() -> str:
    """Requested first by every registry fixture, so that a missing binary starts nothing."""
    try:
        return registry_binary()
    except TestbedUnavailable as exc:
        # Outside the except block, so that a CI failure does not drag the traceback along.
        missing = str(exc)
    skip_or_fail(missing)


@pytest.fixture(scope="session")
def skopeo_path() -> str:
    try:
        return skopeo_binary()
    except TestbedUnavailable as exc:
        # Outside the except block, so that a CI failure does not drag the traceback along.
        missing = str(exc)
    skip_or_fail(missing)


@pytest.fixture(scope="session")
def azurite_path() -> str:
    try:
        return azurite_binary()
    except TestbedUnavailable as exc:
        # Outside the except block, so that a CI failure does not drag the traceback along.
        missing = str(exc)
    skip_or_fail(missing)


@pytest.fixture(scope="session")
def _acr_deployment(azurite_path: str) -> Iterator[AcrDeployment]:
    with contextlib.ExitStack() as stack:
        try:
            deployment = stack.enter_context(open_acr_deployment())
        except TestbedUnavailable as exc:
            missing = str(exc)
        else:
            missing = ""
        if missing:
            skip_or_fail(missing)
        yield deployment


@pytest.fixture
def acr_deployment(_acr_deployment: AcrDeployment) -> AcrDeployment:
    # A throttle, a short SAS or a storage fault left by one test would break the next.
    _acr_deployment.reset()
    return _acr_deployment


@pytest.fixture(scope="session")
def registry(registry_binary_path: str) -> Iterator[Deployment]:
    with open_filesystem_registry() as deployment:
        yield deployment


@pytest.fixture(scope="session")
def tls_registry(registry_binary_path: str) -> Iterator[Deployment]:
    """An https registry (self-signed; its CA is `Deployment.verify`) serving blobs itself."""
    with open_filesystem_registry(tls=True) as deployment:
        yield deployment


@pytest.fixture(scope="session")
def basic_registry(registry_binary_path: str) -> Iterator[Deployment]:
    with open_filesystem_registry(auth=BASIC_AUTH) as deployment:
        yield deployment


@pytest.fixture(scope="session")
def registry_mirror(registry: Deployment) -> Iterator[Mirror]:
    with open_mirror(registry) as mirror:
        yield mirror


@pytest.fixture(scope="session")
def basic_registry_mirror(basic_registry: Deployment) -> Iterator[Mirror]:
    with open_mirror(basic_registry) as mirror:
        yield mirror


@pytest.fixture
def mirror_factory(registry_binary_path: str) -> Iterator[MirrorFactory]:
    with contextlib.ExitStack() as stack:

        def start(origin: Deployment | str, *, upstream_url: str | None = None) -> Mirror:
            return stack.enter_context(open_mirror(origin, upstream_url=upstream_url))

        yield start


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    try:
        server = MotoServer()
    except TestbedUnavailable as exc:
        # Outside the except block, so that a CI failure does not drag the traceback along.
        missing = str(exc)
    else:
        missing = ""
    if missing:
        skip_or_fail(missing)
    with server:
        yield server


@pytest.fixture(scope="session")
def _s3_registry(registry_binary_path: str, moto_server: MotoServer) -> Iterator[Deployment]:
    with open_s3_registry(moto_server) as deployment:
        yield deployment


@pytest.fixture(scope="session")
def _s3_basic_registry(registry_binary_path: str, moto_server: MotoServer) -> Iterator[Deployment]:
    with open_s3_registry(moto_server, auth=BASIC_AUTH) as deployment:
        yield deployment


@pytest.fixture(scope="session")
def _tls_s3_registry(registry_binary_path: str, moto_server: MotoServer) -> Iterator[Deployment]:
    with open_s3_registry(moto_server, auth=BASIC_AUTH, tls=True) as deployment:
        yield deployment


def _fresh(deployment: Deployment) -> Deployment:
    # A failure mode left on by a failed test would otherwise break every later test.
    if deployment.proxy is not None:
        deployment.proxy.reset()
    if deployment.token_server is not None:
        deployment.token_server.reset()
    return deployment


@pytest.fixture
def s3_registry(_s3_registry: Deployment) -> Deployment:
    return _fresh(_s3_registry)


@pytest.fixture
def s3_basic_registry(_s3_basic_registry: Deployment) -> Deployment:
    return _fresh(_s3_basic_registry)


@pytest.fixture
def tls_s3_registry(_tls_s3_registry: Deployment) -> Deployment:
    return _fresh(_tls_s3_registry)


@pytest.fixture(scope="session")
def token_server() -> Iterator[TokenServer]:
    with TokenServer(
        users=dict([TOKEN_AUTH]),
        admin=TOKEN_ADMIN,
        public_repositories={"public/*"},
        aad_tokens={AAD_TOKEN: TOKEN_AUTH[0]},
    ) as server:
        yield server


@pytest.fixture
def fresh_token_server(token_server: TokenServer) -> TokenServer:
    # Short expiries or a failure mode left by one test would otherwise leak into the next.
    token_server.reset()
    return token_server


@pytest.fixture(scope="session")
def _token_registry(registry_binary_path: str, token_server: TokenServer) -> Iterator[Deployment]:
    with open_token_registry(token_server, auth=TOKEN_AUTH) as deployment:
        yield deployment


@pytest.fixture(scope="session")
def _token_s3_registry(
    registry_binary_path: str, token_server: TokenServer, moto_server: MotoServer
) -> Iterator[Deployment]:
    with open_token_registry(token_server, s3=moto_server, auth=TOKEN_AUTH) as deployment:
        yield deployment


@pytest.fixture
def token_registry(_token_registry: Deployment) -> Deployment:
    return _fresh(_token_registry)


@pytest.fixture
def token_s3_registry(_token_s3_registry: Deployment) -> Deployment:
    return _fresh(_token_s3_registry)


_repository_counter = itertools.count()


@pytest.fixture
def repository(request: pytest.FixtureRequest) -> str:
    # Lowercase alphanumerics and dashes satisfy the registry's repository-name grammar.
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60] or "test"
    return f"testbed/{name}-{next(_repository_counter)}"


@pytest.fixture
def public_repository(repository: str) -> str:
    return f"public/{repository}"


@pytest.fixture
def blob_factory(repository: str) -> BlobFactory:
    default_repository = repository

    def push(deployment: Deployment, size: int, repository: str | None = None) -> PushedBlob:
        return deployment.push_random(repository or default_repository, size)

    return push


@pytest.fixture
def blob_file_factory(repository: str, tmp_path: Path) -> BlobFileFactory:
    default_repository = repository
    counter = itertools.count()

    def push(deployment: Deployment, size: int, repository: str | None = None) -> PushedFile:
        path = tmp_path / f"blob-{next(counter)}.bin"
        return deployment.push_random_file(repository or default_repository, size, path)

    return push


@pytest.fixture
def fault_proxy() -> Iterator[FaultProxyFactory]:
    with contextlib.ExitStack() as stack:

        def start(target: Deployment | str) -> FaultProxy:
            if isinstance(target, str):
                return stack.enter_context(FaultProxy(target))
            verify = target.verify
            upstream_ssl = verify if isinstance(verify, ssl.SSLContext) else None
            return stack.enter_context(FaultProxy(target.url, upstream_ssl=upstream_ssl))

        yield start


@pytest.fixture
def proxied(registry: Deployment, fault_proxy: FaultProxyFactory) -> FaultProxy:
    return fault_proxy(registry)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)
