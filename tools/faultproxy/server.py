"""The proxy: relays each request to the upstream, applying the faults of the rules it matches."""

from __future__ import annotations

import http.client
import ipaddress
import re
import ssl
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, Self, cast
from urllib.parse import urlsplit

from tools.faultproxy.faults import NO_FAULT, Fault, Firing, Rule
from tools.testbed.process import Service
from tools.testbed.proxy import RecordedRequest
from tools.testbed.relay import CHUNK, BodyWriter, ProxyServer, RelayHandler, ServerThread, connect

if TYPE_CHECKING:
    from tools.testbed.deployments import Deployment

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class FaultProxy(Service):
    """An HTTP/1.1 reverse proxy on loopback in front of `upstream`, failing on demand.

    Every request is recorded (`requests`) and forwarded, body streamed, to the upstream
    (`http(s)://HOST:PORT[/prefix]`, on loopback); the answer comes back streamed, Location
    untouched, so a registry's redirect to storage still points at storage. It listens on
    plain http, or https with `ssl_context` (tls.server_ssl_context). Rules added with
    `add` bend that for the requests they match; `firings` logs which rule hit which request.
    """

    def __init__(
        self,
        upstream: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        upstream_ssl: ssl.SSLContext | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream must be http(s)://HOST:PORT, got {upstream!r}")
        _require_loopback(parts.hostname, "upstream")
        _require_loopback(host, "host")
        self.upstream = upstream
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port
        self.upstream_prefix = parts.path.rstrip("/")
        self.upstream_ssl = upstream_ssl
        if parts.scheme == "https" and upstream_ssl is None:
            self.upstream_ssl = ssl.create_default_context()
        self.host = host
        self._port = port
        # Clients that refuse plain http (@azure/container-registry) need an https front.
        self.ssl_context = ssl_context
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._requests: list[RecordedRequest] = []
        self._firings: list[Firing] = []
        self._body_bytes = 0
        # Set by stop(): stalls and drips end early instead of holding a handler thread.
        self._stopping = threading.Event()
        self._serving: ServerThread | None = None

    @property
    def port(self) -> int:
        if self._serving is None:
            raise RuntimeError("the fault proxy is not running")
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def add(
        self,
        fault: Fault,
        *,
        method: str | None = None,
        path: str | None = None,
        ranged: bool | None = None,
        headers: Mapping[str, str] | None = None,
        times: int | None = None,
        every: int | None = None,
    ) -> Rule:
        """Apply `fault` to matching requests: `method`, `path` (a regex searched in the path),
        `ranged` (True: only with a Range header, False: only without), `headers` (each header
        present, its value matched in full by the regex: `{"Range": re.escape("bytes=8-15")}`),
        the first `times` (None: all), of those only every `every`-th (None: each one). A
        request matching several rules gets all their faults (see Fault.__or__).
        """
        rule = Rule(
            fault,
            method=method,
            path=path,
            ranged=ranged,
            headers=headers,
            times=times,
            every=every,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule: Rule) -> None:
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    @property
    def rules(self) -> list[Rule]:
        """The rules still in force (expired ones drop out)."""
        with self._lock:
            return list(self._rules)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def firings(self) -> list[Firing]:
        with self._lock:
            return list(self._firings)

    @property
    def body_bytes(self) -> int:
        """The bytes of upstream answer bodies relayed to clients (after cuts), since the
        last `clear`: how much a download really fetched."""
        with self._lock:
            return self._body_bytes

    def clear(self) -> None:
        """Forget the recorded requests, firings and relayed bytes; the rules stay."""
        with self._lock:
            self._requests.clear()
            self._firings.clear()
            self._body_bytes = 0

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()

    def reset(self) -> None:
        with self._lock:
            self._rules.clear()
            self._requests.clear()
            self._firings.clear()
            self._body_bytes = 0

    def _relayed(self, count: int) -> None:
        with self._lock:
            self._body_bytes += count

    def _admit(self, request: RecordedRequest) -> Fault:
        """Record the request and fire every rule it matches; returns their combined fault."""
        fault = NO_FAULT
        with self._lock:
            self._requests.append(request)
            for rule in [r for r in self._rules if r.matches(request)]:
                if not rule.take():
                    continue
                fault = fault | rule.fire()
                self._firings.append(Firing(rule, request))
                if rule.expired:
                    self._rules.remove(rule)
        return fault

    def _pause(self, seconds: float) -> bool:
        """Sleep unless the proxy stops meanwhile; False if it did."""
        return not self._stopping.wait(seconds)

    def _connect(self) -> http.client.HTTPConnection:
        return connect(self.upstream_host, self.upstream_port, ssl_context=self.upstream_ssl)

    def start(self) -> Self:
        if self._serving is not None:
            raise RuntimeError("the fault proxy is already running")
        self._stopping.clear()
        # Binding port 0 here rather than probing for a free one leaves no window for a race.
        server = _FaultServer((self.host, self._port), self)
        self._port = server.server_address[1]
        self._serving = ServerThread(server, name=f"fault-proxy-{self._port}")
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._serving is not None:
            self._serving.stop()
            self._serving = None

    def __repr__(self) -> str:
        where = self.url if self._serving is not None else "stopped"
        return f"FaultProxy({where} -> {self.upstream})"


class FaultProxyFactory(Protocol):
    """The type of the tests' `fault_proxy` fixture: a running FaultProxy in front of a
    registry (or any loopback URL), stopped at the end of the test."""

    def __call__(self, target: Deployment | str) -> FaultProxy: ...


class _FaultServer(ProxyServer):
    def __init__(self, address: tuple[str, int], proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(address, _Handler, proxy.ssl_context)


class _Handler(RelayHandler):
    def _handle(self) -> None:
        proxy = cast(_FaultServer, self.server).proxy
        if not self.path.startswith("/"):
            # Absolute-form targets would make this a forward proxy to anywhere.
            self.answer(400, b"fault proxy: origin-form request targets only\n")
            return
        parts = urlsplit(self.path)
        request = RecordedRequest(
            method=self.command,
            path=parts.path,
            query=parts.query,
            headers=tuple(self.headers.items()),
        )
        fault = proxy._admit(request)
        if fault.stall and not proxy._pause(fault.stall):
            self.cut()
            return
        if fault.status is not None:
            self.answer(fault.status, fault.body, _with_content_type(fault.headers, fault.body))
            return
        headers = self.end_to_end_headers()
        if fault.drop_range:
            headers = [(k, v) for k, v in headers if k.lower() not in ("range", "if-range")]
        if fault.range_start_earlier:
            headers = [
                (k, _start_range_earlier(v, fault.range_start_earlier))
                if k.lower() == "range"
                else (k, v)
                for k, v in headers
            ]
        upstream = proxy._connect()
        try:
            try:
                response = self.forward(upstream, proxy.upstream_prefix + self.path, headers)
            except OSError as error:
                self.answer(502, f"fault proxy: upstream failed: {error}\n".encode())
                return
            self._relay(response, fault, proxy)
        finally:
            upstream.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _handle

    def _relay(self, response: http.client.HTTPResponse, fault: Fault, proxy: FaultProxy) -> None:
        headers = response.getheaders()
        if fault.content_range_shift and response.status == 206:
            headers = [
                (k, _shift_content_range(v, fault.content_range_shift))
                if k.lower() == "content-range"
                else (k, v)
                for k, v in headers
            ]
        for name, value in fault.set_headers:
            headers = [(k, v) for k, v in headers if k.lower() != name.lower()] + [(name, value)]
        writer = self.start_answer(response.status, response.reason, headers)
        if writer is not None:
            self._relay_body(response, writer, fault, proxy)

    def _relay_body(
        self,
        response: http.client.HTTPResponse,
        writer: BodyWriter,
        fault: Fault,
        proxy: FaultProxy,
    ) -> None:
        offset = 0
        stall_at = fault.stall_at
        while True:
            # Asked before each piece, so that a drip that ends frees connections already open.
            pause = fault.drip_pause(time.monotonic())
            if pause is not None:
                assert fault.drip_size is not None
                piece = response.read(fault.drip_size)
                if piece and offset and not proxy._pause(pause):
                    self.cut()
                    return
            else:
                piece = response.read1(CHUNK)
            if not piece:
                break
            piece = _flip(piece, offset, fault.flips)
            if stall_at is not None and offset + len(piece) > stall_at:
                head, piece = piece[: stall_at - offset], piece[stall_at - offset :]
                if not self._write_body(head, offset, writer, fault, proxy):
                    return
                offset += len(head)
                stall_at = None
                if not proxy._pause(fault.stall_at_seconds):
                    self.cut()
                    return
            if not self._write_body(piece, offset, writer, fault, proxy):
                return
            offset += len(piece)
        writer.end()

    def _write_body(
        self, piece: bytes, offset: int, writer: BodyWriter, fault: Fault, proxy: FaultProxy
    ) -> bool:
        """Write `piece`, found at `offset` of the body, up to the cut; False once cut."""
        if fault.cut_at is not None and offset + len(piece) > fault.cut_at:
            writer.write(piece[: fault.cut_at - offset])
            proxy._relayed(fault.cut_at - offset)
            self.cut(reset=fault.reset)
            return False
        writer.write(piece)
        proxy._relayed(len(piece))
        return True


def _flip(piece: bytes, offset: int, flips: frozenset[int]) -> bytes:
    inside = [at - offset for at in flips if offset <= at < offset + len(piece)]
    if not inside:
        return piece
    changed = bytearray(piece)
    for at in inside:
        changed[at] ^= 0xFF
    return bytes(changed)


def _shift_content_range(value: str, delta: int) -> str:
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        return value
    start, end, total = match.groups()
    return f"bytes {int(start) + delta}-{int(end) + delta}/{total}"


def _start_range_earlier(value: str, n_bytes: int) -> str:
    match = _RANGE.fullmatch(value.strip())
    if match is None:
        return value
    start, end = match.groups()
    return f"bytes={max(0, int(start) - n_bytes)}-{end}"


def _with_content_type(
    headers: tuple[tuple[str, str], ...], body: bytes
) -> tuple[tuple[str, str], ...]:
    if not body or any(k.lower() == "content-type" for k, _ in headers):
        return headers
    return (*headers, ("Content-Type", "text/plain; charset=utf-8"))


def _require_loopback(host: str, what: str) -> None:
    """The proxy is for tests on one machine: it neither listens nor forwards beyond it."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"{what} must be a loopback address, got {host!r}")
