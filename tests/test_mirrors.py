"""Mirrors: a real pull-through mirror serves in the origin's place, every way a mirror can fail
moves the download on to the next host with the right bytes, the origin's credentials never
reach a mirror, hosts.toml is read as containerd reads it, and a dead mirror is skipped."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from acr_blob import (
    AsyncBlobClient,
    BlobClient,
    BlobError,
    BlobNotFoundError,
    BlobSizeError,
    DigestMismatchError,
    HostsConfigError,
    Mirror,
    read_hosts_toml,
)
from tests.drivers import MODES, Driver
from tools.faultproxy import Fault, FaultProxy, FaultProxyFactory
from tools.testbed import Deployment, free_port, make_tls_cert
from tools.testbed import Mirror as PullThroughMirror

SIZE = 2 * 1024 * 1024
REPOSITORY = "mirrored/blob"
BLOBS = r"/blobs/"
TIMEOUT = 1.0


@pytest.fixture(scope="module")
def blob(registry: Deployment) -> tuple[str, bytes]:
    data = os.urandom(SIZE)
    return registry.push(REPOSITORY, data), data


def blob_requests(proxy: FaultProxy, method: str = "GET") -> list[str]:
    return [r.path for r in proxy.requests if r.method == method and BLOBS in r.path]


def netloc(url: str) -> str:
    return httpx.URL(url).netloc.decode()


def fetch(driver: Driver, how: str, digest: str, tmp_path: Path) -> bytes:
    if how == "iterate":
        return driver.iterate(REPOSITORY, digest)
    target = tmp_path / "layer.bin"
    driver.to_file(REPOSITORY, digest, target)
    assert list(tmp_path.iterdir()) == [target]  # the mirror's bytes left nothing behind
    return target.read_bytes()


@pytest.mark.parametrize("how", ["iterate", "to_file"])
@pytest.mark.parametrize("mode", MODES)
def test_a_pull_through_mirror_serves_and_the_origin_sees_no_blob_request(
    proxied: FaultProxy,
    registry_mirror: PullThroughMirror,
    fault_proxy: FaultProxyFactory,
    blob: tuple[str, bytes],
    tmp_path: Path,
    mode: str,
    how: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    digest, data = blob
    mirror = fault_proxy(registry_mirror)
    driver = Driver(mode, proxied.url, mirrors=[mirror.url])
    with caplog.at_level(logging.INFO, logger="acr_blob"):
        assert fetch(driver, how, digest, tmp_path) == data
        assert driver.properties(REPOSITORY, digest).size == SIZE
    assert blob_requests(proxied) == [] and blob_requests(proxied, "HEAD") == []
    assert len(blob_requests(mirror)) == 1 and len(blob_requests(mirror, "HEAD")) == 1
    for request in mirror.requests:
        assert parse_qs(request.query) == {"ns": [netloc(proxied.url)]}
    assert f"{digest} from {netloc(mirror.url)}" in caplog.text


def refused_url() -> str:
    return f"http://127.0.0.1:{free_port('127.0.0.1')}"


BAD_MIRRORS = {
    "flipped byte": Fault.flip_byte(SIZE // 2),
    "404": Fault.respond(404),
    "500": Fault.respond(500),
    "stall": Fault.stall_after(64 * 1024, 30.0),
    "cut mid-body": Fault.cut_after(SIZE // 2),
    "wrong size": Fault.set_header("Content-Length", str(SIZE - 1)),
    "forbidden redirect": Fault.respond(307, {"Location": "file:///etc/passwd"}),
    "refused": None,
}


@pytest.mark.parametrize("how", ["iterate", "to_file"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("failure", list(BAD_MIRRORS))
def test_a_bad_mirror_ends_with_the_right_bytes_from_the_origin(
    proxied: FaultProxy,
    registry: Deployment,
    fault_proxy: FaultProxyFactory,
    blob: tuple[str, bytes],
    tmp_path: Path,
    mode: str,
    how: str,
    failure: str,
) -> None:
    digest, data = blob
    fault = BAD_MIRRORS[failure]
    if fault is None:
        url = refused_url()
    else:
        mirror = fault_proxy(registry)
        mirror.add(fault, path=BLOBS)
        url = mirror.url
    driver = Driver(mode, proxied.url, mirrors=[url], timeout=TIMEOUT)
    started = time.monotonic()
    if how == "iterate" and failure in ("flipped byte", "wrong size"):
        # Iterating, the mirror's bytes were handed out before the digest could tell: the
        # iteration fails, and the client's next one (the mirror skipped now) gets the
        # origin's bytes.
        first, second = iterate_twice(mode, proxied.url, digest, mirrors=[url])
        assert isinstance(first, DigestMismatchError | BlobSizeError), first
        assert second == data
    else:
        assert fetch(driver, how, digest, tmp_path) == data
    assert time.monotonic() - started < TIMEOUT + 5
    assert blob_requests(proxied), "the origin served the blob"
    if fault is not None:
        assert blob_requests(mirror), "the mirror was tried first"


def iterate_twice(
    mode: str, endpoint: str, digest: str, **options: Any
) -> tuple[BaseException | None, bytes]:
    """Iterate the blob twice with one client: the first one's error, the second one's bytes."""

    def first_error(read: Callable[[], object]) -> BaseException | None:
        try:
            read()
        except BlobError as error:
            return error
        return None

    if mode == "sync":
        with BlobClient(endpoint, **options) as client:

            def read() -> bytes:
                with client.download_blob(REPOSITORY, digest) as download:
                    return download.readall()

            return first_error(read), read()

    async def run() -> tuple[BaseException | None, bytes]:
        async with AsyncBlobClient(endpoint, **options) as client:
            try:
                async with await client.download_blob(REPOSITORY, digest) as download:
                    await download.readall()
                error = None
            except BlobError as raised:
                error = raised
            async with await client.download_blob(REPOSITORY, digest) as download:
                return error, await download.readall()

    return asyncio.run(run())


@pytest.mark.parametrize("mode", MODES)
def test_the_mirror_gets_ns_and_never_the_origins_credentials(
    basic_registry: Deployment,
    basic_registry_mirror: PullThroughMirror,
    fault_proxy: FaultProxyFactory,
    tmp_path: Path,
    mode: str,
) -> None:
    data = os.urandom(100_000)
    digest = basic_registry.push(REPOSITORY, data)
    origin = fault_proxy(basic_registry)
    mirror = fault_proxy(basic_registry_mirror)
    assert basic_registry.auth is not None
    driver = Driver(mode, origin.url, credential=basic_registry.auth, mirrors=[mirror.url])
    assert fetch(driver, "to_file", digest, tmp_path) == data
    assert blob_requests(origin) == []
    assert blob_requests(mirror)
    for request in mirror.requests:
        assert request.header("Authorization") is None
        assert parse_qs(request.query) == {"ns": [netloc(origin.url)]}


@pytest.mark.parametrize("mode", MODES)
def test_a_mirror_that_challenges_gets_its_own_credential_or_none(
    basic_registry: Deployment,
    fault_proxy: FaultProxyFactory,
    tmp_path: Path,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = os.urandom(100_000)
    digest = basic_registry.push(REPOSITORY, data)
    assert basic_registry.auth is not None
    origin, mirror = fault_proxy(basic_registry), fault_proxy(basic_registry)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    # Without a credential of its own the mirror's 401 moves the download on to the origin.
    driver = Driver(mode, origin.url, credential=basic_registry.auth, mirrors=[mirror.url])
    assert driver.iterate(REPOSITORY, digest) == data
    assert all(r.header("Authorization") is None for r in mirror.requests)
    assert blob_requests(origin)
    # With one (given, or from the Docker config for the mirror's host) it serves.
    user, password = basic_registry.auth
    given = Mirror(mirror.url, credential=(user, password))
    docker = tmp_path / "docker"
    docker.mkdir()
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    (docker / "config.json").write_text(
        json.dumps({"auths": {netloc(mirror.url): {"auth": token}}})
    )
    for mirrors in ([given], [mirror.url]):
        origin.clear()
        mirror.clear()
        driver = Driver(mode, origin.url, credential=("someone", "else"), mirrors=mirrors)
        assert driver.iterate(REPOSITORY, digest) == data
        assert blob_requests(origin) == []
        assert any(r.header("Authorization") for r in mirror.requests)


def write_hosts_toml(hosts_dir: Path, origin_url: str, text: str) -> None:
    folder = hosts_dir / netloc(origin_url)
    folder.mkdir(parents=True)
    (folder / "hosts.toml").write_text(text)


@pytest.mark.parametrize("mode", MODES)
def test_hosts_toml_with_a_mirror_and_with_override_path(
    proxied: FaultProxy,
    registry_mirror: PullThroughMirror,
    fault_proxy: FaultProxyFactory,
    blob: tuple[str, bytes],
    tmp_path: Path,
    mode: str,
) -> None:
    digest, data = blob
    mirror = fault_proxy(registry_mirror)
    cases = {
        "plain": (f'[host."{mirror.url}"]\ncapabilities = ["pull", "resolve"]\n', True),
        "override_path": (f'[host."{mirror.url}/v2"]\noverride_path = true\n', True),
        # Without override_path a URL's path comes before /v2: this one asks for /v2/v2/...
        "path without override_path": (f'[host."{mirror.url}/v2"]\n', False),
        "resolve only": (f'[host."{mirror.url}"]\ncapabilities = ["resolve"]\n', False),
    }
    for name, (table, served) in cases.items():
        hosts_dir = tmp_path / name
        write_hosts_toml(hosts_dir, proxied.url, f'server = "{proxied.url}"\n\n{table}')
        proxied.clear()
        mirror.clear()
        driver = Driver(mode, proxied.url, hosts_dir=hosts_dir)
        assert driver.iterate(REPOSITORY, digest) == data, name
        assert bool(blob_requests(proxied)) is not served, name
        if served:
            assert blob_requests(mirror) == [f"/v2/{REPOSITORY}/blobs/{digest}"], name
        elif name == "path without override_path":
            assert blob_requests(mirror) == [f"/v2/v2/{REPOSITORY}/blobs/{digest}"], name


@pytest.mark.parametrize("mode", MODES)
def test_without_server_in_hosts_toml_there_is_no_fallback(
    proxied: FaultProxy, blob: tuple[str, bytes], tmp_path: Path, mode: str
) -> None:
    digest, _ = blob
    first, second = refused_url(), refused_url()
    write_hosts_toml(tmp_path, proxied.url, f'[host."{first}"]\n[host."{second}"]\n')
    driver = Driver(mode, proxied.url, hosts_dir=tmp_path)
    with pytest.raises(Exception) as raised:
        driver.iterate(REPOSITORY, digest)
    assert proxied.requests == []
    assert [host for host, _ in raised.value.hosts_tried] == [netloc(first)]  # type: ignore[attr-defined]
    assert netloc(second) in str(raised.value) and netloc(first) in str(raised.value)
    # The option says the same for mirrors= alone.
    driver = Driver(mode, proxied.url, mirrors=[first], fallback_to_origin=False)
    with pytest.raises(Exception, match=r"refused|failed"):
        driver.to_file(REPOSITORY, digest, tmp_path / "layer.bin")
    assert proxied.requests == []


@pytest.mark.parametrize("mode", MODES)
def test_the_last_error_lists_each_host_and_why(
    proxied: FaultProxy, tmp_path: Path, mode: str
) -> None:
    missing = "sha256:" + "0" * 64
    first, second = refused_url(), refused_url()
    driver = Driver(mode, proxied.url, mirrors=[first, second])
    with pytest.raises(BlobNotFoundError) as raised:
        driver.to_file(REPOSITORY, missing, tmp_path / "layer.bin")
    tried = raised.value.hosts_tried
    assert [host for host, _ in tried] == [netloc(first), netloc(second)]
    assert all("failed" in why for _, why in tried)
    message = str(raised.value)
    assert message.startswith("registry answered 404")
    assert netloc(first) in message and netloc(second) in message
    assert not list(tmp_path.iterdir())


@contextlib.contextmanager
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """A mirror that accepts connections and never answers: each request waits out its read
    timeout. Yields its URL and the connections it accepted."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


def test_a_dead_mirror_is_skipped_by_the_next_downloads(
    proxied: FaultProxy, registry: Deployment, tmp_path: Path
) -> None:
    digests = [registry.push(REPOSITORY, os.urandom(10_000)) for _ in range(20)]
    with silent_server() as (url, accepted):
        with BlobClient(proxied.url, mirrors=[url], timeout=TIMEOUT) as client:
            started = time.monotonic()
            for index, digest in enumerate(digests):
                client.download_blob_to_file(REPOSITORY, digest, tmp_path / f"{index}.bin")
            elapsed = time.monotonic() - started
        assert len(accepted) == 1
    # One timeout, then downloads from the origin alone: not twenty timeouts.
    assert elapsed < TIMEOUT + 4, elapsed
    assert len(blob_requests(proxied)) == 20


def test_parallel_parts_use_the_host_that_serves(
    proxied: FaultProxy, registry: Deployment, fault_proxy: FaultProxyFactory, tmp_path: Path
) -> None:
    data = os.urandom(24 * 1024 * 1024)
    digest = registry.push(REPOSITORY, data)
    mirror = fault_proxy(registry)
    with BlobClient(proxied.url, mirrors=[mirror.url], max_concurrency=3) as client:
        client.download_blob_to_file(REPOSITORY, digest, tmp_path / "layer.bin")
    assert (tmp_path / "layer.bin").read_bytes() == data
    ranged = [r for r in mirror.requests if r.header("Range") and BLOBS in r.path]
    assert len(ranged) >= 2
    assert blob_requests(proxied) == []


def test_hosts_toml_is_read_as_containerd_writes_it(tmp_path: Path) -> None:
    make_tls_cert(tmp_path)
    write_hosts_toml(
        tmp_path,
        "https://myregistry.azurecr.io",
        """
server = "https://myregistry.azurecr.io"

[host."https://mirror.example.com:5000/prefix"]
  capabilities = ["pull"]
  skip_verify = true
  dial_timeout = "1m1.5s"
  [host."https://mirror.example.com:5000/prefix".header]
    x-custom = ["a", "b"]

[host."http://127.0.0.1:30020/v2"]
  override_path = true
  ca = "../registry.crt"
""",
    )
    config = read_hosts_toml(tmp_path, "myregistry.azurecr.io")
    assert config is not None and config.fallback
    first, second = config.mirrors
    assert first.url == "https://mirror.example.com:5000/prefix"
    assert first.capabilities == {"pull"} and first.verify is False
    assert first.connect_timeout == 61.5 and dict(first.headers) == {"x-custom": "a, b"}
    assert first.request_path("/v2/a/blobs/x") == "/v2/a/blobs/x"
    assert second.override_path and second.request_path("/v2/a/blobs/x") == "/a/blobs/x"
    assert second.capabilities == {"pull", "resolve"}
    assert not isinstance(second.verify, bool)
    assert read_hosts_toml(tmp_path, "other.example.com") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server = ", "cannot read it"),
        ('[host."https://m"]\nclient = "c.pem"\n', "client certificates"),
        ('[host."https://m"]\ncapabilities = ["pul"]\n', "unknown capabilities"),
        ('[host."https://m"]\ncapabilities = "pull"\n', "list of strings"),
        ('[host."https://m"]\ndial_timeout = "10 seconds"\n', "dial_timeout"),
        ('[host."https://m"]\nca = "missing.pem"\n', "missing.pem"),
        ('[host."ftp://m"]\n', "invalid mirror URL"),
        ('[host."https://user:pw@m"]\n', "credentials"),
    ],
)
def test_a_bad_hosts_toml_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    write_hosts_toml(tmp_path, "https://r.example", text)
    with pytest.raises(HostsConfigError, match=message) as raised:
        BlobClient("r.example", hosts_dir=tmp_path)
    assert raised.value.path == str(tmp_path / "r.example" / "hosts.toml")


def test_mirror_options_are_checked_before_any_request() -> None:
    with pytest.raises(HostsConfigError, match="invalid mirror URL"):
        Mirror("")
    with pytest.raises(HostsConfigError, match="query"):
        BlobClient("r.example", mirrors=["https://m.example/?token=1"])
    with pytest.raises(TypeError, match="list"):
        BlobClient("r.example", mirrors="https://m.example")  # type: ignore[arg-type]
    assert Mirror("m.example:5000/").url == "https://m.example:5000"
    assert "password" not in repr(Mirror("https://m.example", credential=("u", "password")))


def test_hosts_toml_falls_back_to_default_and_names_docker_hub_docker_io(tmp_path: Path) -> None:
    write_hosts_toml(tmp_path, "https://_default", '[host."https://everyone.example"]\n')
    write_hosts_toml(tmp_path, "https://docker.io", '[host."https://hub-mirror.example"]\n')
    with BlobClient("other.example", hosts_dir=tmp_path):
        pass
    config = read_hosts_toml(tmp_path, "other.example")
    assert config is not None and [m.url for m in config.mirrors] == ["https://everyone.example"]
    from acr_blob.mirrors import HostPlan

    plan = HostPlan.of("https://registry-1.docker.io", None, tmp_path, None)
    assert [m.url for m in plan.mirrors] == [
        "https://hub-mirror.example"
    ] and plan.ns == "docker.io"
    assert not plan.fallback  # no server = "...": no fallback
