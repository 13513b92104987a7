"""A recording HTTP proxy in front of moto that answers like real S3 where moto is lenient.

The registry's S3 driver has one endpoint for everything, so the proxy carries two kinds of
traffic: the registry's own requests (signed in the `Authorization` header) and clients
following a redirect (signed in the query: presigned URLs). Real S3 refuses a request signed
both ways; moto does not check, hence this proxy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Self, cast
from urllib.parse import parse_qsl, urlsplit

from tools.testbed.process import Service, free_port
from tools.testbed.relay import CHUNK, ProxyServer, RelayHandler, ServerThread, connect

_PRESIGN_PARAMETERS = {"x-amz-signature", "x-amz-algorithm", "signature"}

# Real S3 echoes the offending header in ArgumentValue (seen in the wild, e.g.
# catalyst/moodle-tool_objectfs#303): a client that puts error bodies into its exception
# messages leaks the registry credentials there, which tests may want to catch.
ONE_AUTH_MECHANISM_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>InvalidArgument</Code>"
    "<Message>Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
    "Signature query string parameter or the Authorization header should be specified</Message>"
    "<ArgumentName>Authorization</ArgumentName><ArgumentValue>{value}</ArgumentValue>"
    "<RequestId>TESTBED0000000000</RequestId><HostId>testbed</HostId></Error>"
)


def s3_error_xml(code: str, message: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{_xml_escape(code)}</Code><Message>{_xml_escape(message)}</Message>"
        "<RequestId>TESTBED0000000000</RequestId><HostId>testbed</HostId></Error>"
    )


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)

    @property
    def presigned(self) -> bool:
        """Signed in the query string, i.e. a client following the registry's redirect."""
        return any(k.lower() in _PRESIGN_PARAMETERS for k, _ in parse_qsl(self.query))


@dataclass
class _Failure:
    status: int
    body: bytes
    content_type: str
    remaining: int | None


@dataclass
class _Cut:
    after_bytes: int
    remaining: int | None


class StorageProxy(Service):
    """Forwards everything to `upstream`, streaming bodies both ways, and records each request.

    Presigned requests (see RecordedRequest.presigned) that also carry `Authorization` get
    S3's 400 InvalidArgument without being forwarded. `fail_presigned` makes presigned
    requests fail on demand, `cut_presigned` breaks their bodies off; the registry's own traffic
    is never failed, so the registry keeps answering its redirects.
    """

    def __init__(self, upstream: str, *, host: str = "127.0.0.2") -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream must be http://HOST:PORT, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port
        self.host = host
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._failure: _Failure | None = None
        self._cut: _Cut | None = None
        self._serving: ServerThread | None = None

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def presigned_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.presigned]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def fail_presigned(
        self,
        status: int = 403,
        body: str | None = None,
        *,
        times: int | None = None,
        content_type: str = "application/xml",
    ) -> None:
        """Answer presigned requests with `status` and `body` (default: S3's AccessDenied).

        `times` limits it to the next N presigned requests, for retry tests; None is forever.
        """
        text = body if body is not None else s3_error_xml("AccessDenied", "Access Denied")
        with self._lock:
            self._failure = _Failure(status, text.encode(), content_type, times)

    def stop_failing(self) -> None:
        with self._lock:
            self._failure = None

    def cut_presigned(self, after_bytes: int, *, times: int | None = 1) -> None:
        """Break off the bodies of the next `times` presigned GETs after `after_bytes` bytes.

        Status and headers (the full Content-Length) arrive unchanged, then that many body
        bytes, then the connection closes: storage failing mid-blob after a registry's 307.
        A body no longer than `after_bytes` arrives whole. `times=None` is forever.
        """
        if after_bytes < 0:
            raise ValueError(f"after_bytes must be >= 0, got {after_bytes}")
        if times is not None and times <= 0:
            raise ValueError(f"times must be > 0 or None, got {times}")
        with self._lock:
            self._cut = _Cut(after_bytes, times)

    def stop_cutting(self) -> None:
        with self._lock:
            self._cut = None

    def reset(self) -> None:
        """Back to a clean state between tests."""
        with self._lock:
            self._requests.clear()
            self._failure = None
            self._cut = None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _take_failure(self, request: RecordedRequest) -> _Failure | None:
        with self._lock:
            failure = self._failure
            if failure is None or not request.presigned:
                return None
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failure = None
            return failure

    def _take_cut(self, request: RecordedRequest) -> int | None:
        """How many body bytes this request's answer gets before the cut; None: all of them."""
        with self._lock:
            cut = self._cut
            if cut is None or not request.presigned or request.method != "GET":
                return None
            if cut.remaining is not None:
                cut.remaining -= 1
                if cut.remaining <= 0:
                    self._cut = None
            return cut.after_bytes

    def start(self) -> Self:
        server = _ProxyServer((self.host, self.port), self)
        self._serving = ServerThread(server, name=f"storage-proxy-{self.port}")
        return self

    def stop(self) -> None:
        if self._serving is not None:
            self._serving.stop()
            self._serving = None


class _ProxyServer(ProxyServer):
    def __init__(self, address: tuple[str, int], proxy: StorageProxy) -> None:
        self.proxy = proxy
        super().__init__(address, _Handler)


class _Handler(RelayHandler):
    def _handle(self) -> None:
        proxy = cast(_ProxyServer, self.server).proxy
        parts = urlsplit(self.path)
        recorded = RecordedRequest(
            method=self.command,
            path=parts.path,
            query=parts.query,
            headers=tuple(self.headers.items()),
        )
        proxy._record(recorded)
        authorization = recorded.header("Authorization")
        if recorded.presigned and authorization is not None:
            body = ONE_AUTH_MECHANISM_XML.format(value=_xml_escape(authorization))
            self.answer(400, body.encode(), [("Content-Type", "application/xml")])
        elif failure := proxy._take_failure(recorded):
            self.answer(failure.status, failure.body, [("Content-Type", failure.content_type)])
        else:
            self._forward(proxy, proxy._take_cut(recorded))

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _handle

    def _forward(self, proxy: StorageProxy, cut_after: int | None) -> None:
        upstream = connect(proxy.upstream_host, proxy.upstream_port)
        try:
            response = self.forward(upstream, self.path, self.end_to_end_headers())
            writer = self.start_answer(response.status, response.reason, response.getheaders())
            if writer is None:
                return
            sent = 0
            while piece := response.read1(CHUNK):
                if cut_after is not None and sent + len(piece) > cut_after:
                    writer.write(piece[: cut_after - sent])
                    self.cut()
                    return
                writer.write(piece)
                sent += len(piece)
            writer.end()
        finally:
            upstream.close()


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
