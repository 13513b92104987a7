"""The fault proxy itself, with plain httpx against real registries behind it: every fault does
what it says and nothing more, so that SDK tests built on it can trust their setup."""

from __future__ import annotations

import re
import selectors
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tools.faultproxy import Fault, FaultProxy, FaultProxyFactory, Rule
from tools.faultproxy.faults import NO_FAULT
from tools.testbed import BlobFactory, Deployment, free_port, push_blob

ROOT = Path(__file__).resolve().parent.parent


def client() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=30.0)


def blob_url(proxy: FaultProxy, repository: str, digest: str) -> str:
    return f"{proxy.url}/v2/{repository}/blobs/{digest}"


def read_until_broken(url: str) -> tuple[httpx.Response, bytes, Exception]:
    """GET `url`, keeping every body byte that arrives before the transport fails."""
    received = bytearray()
    with client() as c, c.stream("GET", url) as response:
        try:
            for piece in response.iter_raw():
                received += piece
        except (httpx.RemoteProtocolError, httpx.ReadError) as error:
            return response, bytes(received), error
    raise AssertionError(f"the body arrived whole ({len(received)} bytes)")


def test_passes_a_large_blob_through_unchanged(
    registry: Deployment,
    repository: str,
    blob_factory: BlobFactory,
    fault_proxy: FaultProxyFactory,
) -> None:
    digest, data = blob_factory(registry, 3 * 1024 * 1024 + 1)
    proxy = fault_proxy(registry)
    with client() as c:
        response = c.get(blob_url(proxy, repository, digest), headers={"X-Probe": "yes"})
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["Docker-Content-Digest"] == digest
    [seen] = proxy.requests
    assert (seen.method, seen.path) == ("GET", f"/v2/{repository}/blobs/{digest}")
    assert seen.header("X-Probe") == "yes"
    assert proxy.firings == []


def test_pushes_stream_through_and_uploads_stay_on_the_proxy(
    registry: Deployment, repository: str, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(registry)
    data = b"pushed through the fault proxy" * 10_000
    digest = push_blob(proxy.url, repository, data)
    with client() as c:
        assert c.get(registry.blob_url(repository, digest)).content == data
    # The registry builds upload URLs from Host, which the proxy passes on as sent.
    assert [r.method for r in proxy.requests] == ["POST", "PUT"]


def test_cut_after_sends_exactly_n_bytes_then_closes(
    registry: Deployment,
    repository: str,
    blob_factory: BlobFactory,
    fault_proxy: FaultProxyFactory,
) -> None:
    digest, data = blob_factory(registry, 100_000)
    proxy = fault_proxy(registry)
    rule = proxy.add(Fault.cut_after(1000), path=r"/blobs/", times=1)
    url = blob_url(proxy, repository, digest)

    response, received, error = read_until_broken(url)
    assert isinstance(error, httpx.RemoteProtocolError)
    assert response.headers["Content-Length"] == str(len(data))
    assert received == data[:1000]
    with client() as c:
        assert c.get(url).content == data
    assert rule.fired == 1
    assert proxy.rules == []
    [firing] = proxy.firings
    assert firing.rule is rule
    assert firing.request.path.endswith(digest)


def test_cut_after_with_reset(
    registry: Deployment,
    repository: str,
    blob_factory: BlobFactory,
    fault_proxy: FaultProxyFactory,
) -> None:
    digest, data = blob_factory(registry, 3 * 1024 * 1024)
    proxy = fault_proxy(registry)
    proxy.add(Fault.cut_after(2 * 1024 * 1024 + 3, reset=True))
    _, received, error = read_until_broken(blob_url(proxy, repository, digest))
    assert isinstance(error, httpx.ReadError)
    assert received == data[: 2 * 1024 * 1024 + 3]


def test_flip_byte_changes_exactly_that_byte(
    registry: Deployment,
    repository: str,
    blob_factory: BlobFactory,
    fault_proxy: FaultProxyFactory,
) -> None:
    digest, data = blob_factory(registry, 2 * 1024 * 1024)
    proxy = fault_proxy(registry)
    offset = 1024 * 1024 + 17
    proxy.add(Fault.flip_byte(offset))
    with client() as c:
        response = c.get(blob_url(proxy, repository, digest))
    assert response.status_code == 200
    body = response.content
    assert len(body) == len(data)
    assert [i for i in range(len(data)) if body[i] != data[i]] == [offset]
    assert body[offset] == data[offset] ^ 0xFF


def test_rules_that_match_together_apply_together(
    registry: Deployment,
    repository: str,
    blob_factory: BlobFactory,
    fault_proxy: FaultProxyFactory,
) -> None:
    digest, data = blob_factory(registry, 10_000)
    proxy = fault_proxy(registry)
    proxy.add(Fault.flip_byte(10), times=1)
    proxy.add(Fault.cut_after(100), method="GET", times=1)
    proxy.add(Fault.respond(500), method="DELETE")
    _, received, _ = read_until_broken(blob_url(proxy, repository, digest))
    assert received == data[:10] + bytes([data[10] ^ 0xFF]) + data[11:100]
    assert len(proxy.firings) == 2
    assert len(proxy.rules) == 1


def test_respond_answers_instead_of_upstream_then_expires(
    registry: Deployment, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(registry)
    proxy.add(Fault.respond(429, {"Retry-After": "2"}, "slow down"), method="GET", times=2)
    with client() as c:
        answers = [c.get(f"{proxy.url}/v2/") for _ in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].headers["Retry-After"] == "2"
    assert answers[0].text == "slow down"
    assert len(proxy.firings) == 2


def test_respond_with_an_html_bad_gateway(
    registry: Deployment, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(registry)
    html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    proxy.add(Fault.respond(502, {"Content-Type": "text/html"}, html))
    with client() as c:
        response = c.get(f"{proxy.url}/v2/")
    assert response.status_code == 502
    assert response.headers["Content-Type"] == "text/html"
    assert response.text == html


def test_ignore_range_turns_a_range_request_into_a_200(
    registry: Deployment,
    repository: str,
    blob_factory: BlobFactory,
    fault_proxy: FaultProxyFactory,
) -> None:
    digest, data = blob_factory(registry, 5000)
    proxy = fault_proxy(registry)
    rule = proxy.add(Fault.ignore_range(), ranged=True)
    url = blob_url(proxy, repository, digest)
    with client() as c:
        whole = c.get(url)
        ranged = c.get(url, headers={"Range": "bytes=100-199"})
    assert whole.status_code == ranged.status_code == 200
    assert ranged.content == data
    assert "Content-Range" not in ranged.headers
    # The unranged request did not match, so only the ranged one used the rule.
    assert rule.fired == 1
    assert proxy.requests[1].header("Range") == "bytes=100-199"


def test_shift_content_range_moves_the_header_not_the_body(
    registry: Deployment,
    repository: str,
    blob_factory: BlobFactory,
    fault_proxy: FaultProxyFactory,
) -> None:
    digest, data = blob_factory(registry, 1000)
    proxy = fault_proxy(registry)
    proxy.add(Fault.shift_content_range(5))
    with client() as c:
        response = c.get(blob_url(proxy, repository, digest), headers={"Range": "bytes=10-19"})
    assert response.status_code == 206
    assert response.headers["Content-Range"] == "bytes 15-24/1000"
    assert response.content == data[10:20]


def test_drip_is_slow_but_complete(
    registry: Deployment,
    repository: str,
    blob_factory: BlobFactory,
    fault_proxy: FaultProxyFactory,
) -> None:
    digest, data = blob_factory(registry, 4000)
    proxy = fault_proxy(registry)
    proxy.add(Fault.drip(1000, 0.1))
    started = time.monotonic()
    with client() as c, c.stream("GET", blob_url(proxy, repository, digest)) as response:
        pieces = list(response.iter_raw())
    elapsed = time.monotonic() - started
    assert b"".join(pieces) == data
    assert elapsed >= 0.2
    assert len(pieces) >= 4


def test_a_lasting_drip_ends_on_a_connection_already_open(
    registry: Deployment,
    repository: str,
    blob_factory: BlobFactory,
    fault_proxy: FaultProxyFactory,
) -> None:
    digest, data = blob_factory(registry, 1024 * 1024)
    proxy = fault_proxy(registry)
    # An hour between pieces: only the drip's end lets a body through within the timeout.
    rule = proxy.add(Fault.drip(64 * 1024, 3600.0, lasting=0.3), path=r"/blobs/")
    url = blob_url(proxy, repository, digest)
    with client() as c:
        assert c.get(url).content == data
        # A connection opened after the end is not paced either.
        assert c.get(url).content == data
    assert rule.fired == 2
    assert rule.first_fired_at is not None
    assert "drip 65536 B every 3600 s for 0.3 s" in str(rule)


def test_a_lasting_drip_counts_from_its_rules_first_firing() -> None:
    rule = Rule(Fault.drip(10, 0.5, lasting=2.0))
    first = rule.fire()
    assert rule.first_fired_at is not None
    assert first.drip_until == rule.first_fired_at + 2.0
    assert rule.fire().drip_until == first.drip_until
    end = rule.first_fired_at + 2.0
    assert first.drip_pause(end - 1.0) == 0.5
    assert first.drip_pause(end - 0.1) == pytest.approx(0.1)  # the last wait is cut short
    assert first.drip_pause(end) is None
    assert Fault.drip(10, 0.5).drip_pause(end + 1e6) == 0.5
    assert Fault.cut_after(3).drip_pause(0.0) is None
    # Combined with another fault, the lasting drip keeps its end.
    assert (Fault.flip_byte(1) | first).drip_until == first.drip_until


def test_every_fires_on_every_kth_matching_request(
    registry: Deployment, fault_proxy: FaultProxyFactory
) -> None:
    data = bytes(range(256)) * 8
    digest = registry.push("faultproxy/every", data)
    proxy = fault_proxy(registry)
    rule = proxy.add(Fault.respond(429, {"Retry-After": "1"}), method="GET", ranged=True, every=3)
    url = f"{proxy.url}/v2/faultproxy/every/blobs/{digest}"
    statuses = []
    with client() as c:
        for index in range(7):
            statuses.append(c.get(url, headers={"Range": f"bytes={index}-{index}"}).status_code)
            # Requests without Range do not match, so they do not count towards `every`.
            assert c.get(url).status_code == 200
        throttled = c.get(url, headers={"Range": "bytes=0-0"})
    assert statuses == [206, 206, 429, 206, 206, 429, 206]
    assert throttled.status_code == 206  # the 8th
    assert (rule.matched, rule.fired) == (8, 2)
    assert len(proxy.firings) == 2
    assert "every=3" in repr(rule)
    with pytest.raises(ValueError, match="every"):
        Rule(NO_FAULT, every=0)


def test_stall_before_headers_trips_a_read_timeout(
    registry: Deployment, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(registry)
    proxy.add(Fault.stall_before_headers(5.0), times=1)
    with httpx.Client(trust_env=False, timeout=httpx.Timeout(5.0, read=0.2)) as c:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            c.get(f"{proxy.url}/v2/")
        assert time.monotonic() - started < 2.0
        assert c.get(f"{proxy.url}/v2/").status_code == 200


def test_stop_does_not_wait_for_a_stall(registry: Deployment) -> None:
    with FaultProxy(registry.url) as proxy, httpx.Client(trust_env=False, timeout=0.2) as c:
        proxy.add(Fault.stall_before_headers(30.0))
        with pytest.raises(httpx.ReadTimeout):
            c.get(f"{proxy.url}/v2/")
        started = time.monotonic()
    assert time.monotonic() - started < 2.0


def test_stall_after_holds_the_body_mid_way_then_relays_the_rest(
    registry: Deployment,
    repository: str,
    blob_factory: BlobFactory,
    fault_proxy: FaultProxyFactory,
) -> None:
    digest, data = blob_factory(registry, 3 * 1024 * 1024)
    proxy = fault_proxy(registry)
    stall_at = 1024 * 1024 + 5
    proxy.add(Fault.stall_after(stall_at, 0.6), times=1)
    url = blob_url(proxy, repository, digest)
    received = bytearray()
    # A read timeout inside the stall: the bytes before it arrived, nothing after, and the
    # connection is still open (a timeout, not an end of body).
    with (
        httpx.Client(trust_env=False, timeout=httpx.Timeout(5.0, read=0.2)) as c,
        c.stream("GET", url) as response,
        pytest.raises(httpx.ReadTimeout),
    ):
        for piece in response.iter_raw():
            received += piece
    assert bytes(received) == data[:stall_at]
    # Without a timeout the body waits the stall out and arrives whole.
    proxy.add(Fault.stall_after(stall_at, 0.6), times=1)
    gaps = []
    with client() as c, c.stream("GET", url) as response:
        received, last = bytearray(), time.monotonic()
        for piece in response.iter_raw():
            now = time.monotonic()
            gaps.append((len(received), now - last))
            received += piece
            last = now
    assert bytes(received) == data
    # The longest wait between two pieces came right at the stall.
    assert max(gaps, key=lambda gap: gap[1])[0] == stall_at
    assert max(gap for _, gap in gaps) >= 0.5


def test_stop_ends_a_stall_mid_body_with_a_cut(
    registry: Deployment, repository: str, blob_factory: BlobFactory
) -> None:
    digest, data = blob_factory(registry, 2 * 1024 * 1024)
    received = bytearray()
    with FaultProxy(registry.url) as proxy, client() as c:
        proxy.add(Fault.stall_after(1000, 60.0))
        response = c.send(c.build_request("GET", blob_url(proxy, repository, digest)), stream=True)
        pieces = response.iter_raw()
        while len(received) < 1000:
            received += next(pieces)
        started = time.monotonic()
        proxy.stop()
        with pytest.raises(httpx.RemoteProtocolError):
            for piece in pieces:
                received += piece
        assert time.monotonic() - started < 2.0
        response.close()
    assert bytes(received) == data[:1000]


def test_a_rule_can_match_a_header_value_in_full(
    registry: Deployment,
    repository: str,
    blob_factory: BlobFactory,
    fault_proxy: FaultProxyFactory,
) -> None:
    digest, data = blob_factory(registry, 5000)
    proxy = fault_proxy(registry)
    rule = proxy.add(Fault.respond(503), headers={"Range": re.escape("bytes=100-199")})
    url = blob_url(proxy, repository, digest)
    with client() as c:
        # No Range, another Range, one that only starts like it: none of them match.
        assert c.get(url).content == data
        assert c.get(url, headers={"Range": "bytes=0-99"}).content == data[:100]
        assert c.get(url, headers={"Range": "bytes=100-1999"}).content == data[100:2000]
        assert c.get(url, headers={"Range": "bytes=100-199"}).status_code == 503
    assert rule.fired == 1
    assert f"Range={re.escape('bytes=100-199')!r}" in repr(rule)


def test_unreachable_upstream_is_a_502() -> None:
    with FaultProxy(f"http://127.0.0.1:{free_port()}") as proxy, client() as c:
        response = c.get(f"{proxy.url}/v2/")
    assert response.status_code == 502
    assert "upstream failed" in response.text


def test_https_upstream(tls_s3_registry: Deployment, fault_proxy: FaultProxyFactory) -> None:
    proxy = fault_proxy(tls_s3_registry)
    assert proxy.url.startswith("http://")
    with client() as c:
        assert c.get(f"{proxy.url}/v2/", auth=tls_s3_registry.auth).status_code == 200


def test_redirect_to_storage_keeps_its_location(
    s3_registry: Deployment,
    repository: str,
    blob_factory: BlobFactory,
    fault_proxy: FaultProxyFactory,
) -> None:
    assert s3_registry.proxy is not None
    digest, data = blob_factory(s3_registry, 10_000)
    proxy = fault_proxy(s3_registry)
    with client() as c:
        redirect = c.get(blob_url(proxy, repository, digest))
        assert redirect.status_code == 307
        location = httpx.URL(redirect.headers["Location"])
        assert (location.host, location.port) == ("127.0.0.2", s3_registry.proxy.port)
        assert c.get(location).content == data


def test_storage_cut_presigned_breaks_off_after_the_redirect(
    s3_registry: Deployment, repository: str, blob_factory: BlobFactory
) -> None:
    storage = s3_registry.proxy
    assert storage is not None
    digest, data = blob_factory(s3_registry, 300_000)
    storage.cut_presigned(4096, times=1)
    with client() as c:
        redirect = c.get(s3_registry.blob_url(repository, digest))
    assert redirect.status_code == 307
    location = redirect.headers["Location"]

    response, received, error = read_until_broken(location)
    assert isinstance(error, httpx.RemoteProtocolError)
    assert response.headers["Content-Length"] == str(len(data))
    assert received == data[:4096]
    with client() as c:
        assert c.get(location).content == data


def test_command_line_proxy(
    registry: Deployment, repository: str, blob_factory: BlobFactory
) -> None:
    digest, data = blob_factory(registry, 10_000)
    argv = [sys.executable, "-m", "tools.faultproxy", "--upstream", registry.url]
    process = subprocess.Popen(
        [*argv, "--cut-after", "100"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        url = _first_line(process, timeout=10.0)
        assert url.startswith("http://127.0.0.1:")
        _, received, _ = read_until_broken(f"{url}/v2/{repository}/blobs/{digest}")
        assert received == data[:100]
    finally:
        process.terminate()
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == 0


def test_command_line_proxy_every_kth_ranged_request(registry: Deployment) -> None:
    data = b"every other ranged request"
    digest = registry.push("faultproxy/cli-every", data)
    argv = [sys.executable, "-m", "tools.faultproxy", "--upstream", registry.url]
    argv += ["--status", "429", "--retry-after", "1", "--every", "2", "--ranged"]
    process = subprocess.Popen(
        argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        url = f"{_first_line(process, timeout=10.0)}/v2/faultproxy/cli-every/blobs/{digest}"
        with client() as c:
            ranged = [c.get(url, headers={"Range": "bytes=0-4"}) for _ in range(4)]
            assert c.get(url).content == data
        assert [r.status_code for r in ranged] == [206, 429, 206, 429]
        assert ranged[1].headers["Retry-After"] == "1"
    finally:
        process.terminate()
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        process.stderr.close()


def _first_line(process: subprocess.Popen[bytes], *, timeout: float) -> str:
    """The process's first stdout line, or a failure with its stderr if none comes in time."""
    assert process.stdout is not None and process.stderr is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if selector.select(timeout):
            line = process.stdout.readline().decode().strip()
            if line:
                return line
    process.kill()
    _, stderr = process.communicate(timeout=5.0)
    raise AssertionError(f"no URL printed; stderr:\n{stderr.decode(errors='replace')}")


def test_set_header_replaces_an_upstream_header(
    registry: Deployment, fault_proxy: FaultProxyFactory
) -> None:
    data = b"header test"
    digest = registry.push("faultproxy/header", data)
    proxy = fault_proxy(registry)
    other = "sha256:" + "e" * 64
    proxy.add(Fault.set_header("Docker-Content-Digest", other), path=r"/blobs/", times=1)
    url = f"{proxy.url}/v2/faultproxy/header/blobs/{digest}"
    first = httpx.get(url)
    assert first.headers.get_list("Docker-Content-Digest") == [other]
    assert first.content == data
    assert httpx.get(url).headers["Docker-Content-Digest"] == digest
