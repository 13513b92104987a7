"""A recording HTTP proxy in front of moto that answers like real S3 where moto is lenient.

The registry's S3 driver has one endpoint for everything, so the proxy carries two kinds of
traffic: the registry's own requests (signed in the `Authorization` header) and clients
following a redirect (signed in the query: presigned URLs). Real S3 refuses a request signed
both ways; moto does not check, hence this proxy.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self, cast
from urllib.parse import parse_qsl, urlsplit

from tools.testbed.process import free_port

_CHUNK = 1 << 20
# Hop-by-hop headers (RFC 9110 7.6.1) stay on their own hop; Expect is answered here (the
# handler sends `100 Continue` itself) and http.client cannot relay it.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
}
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


class StorageProxy:
    """Forwards everything to `upstream`, streaming bodies both ways, and records each request.

    Presigned requests (see RecordedRequest.presigned) that also carry `Authorization` get
    S3's 400 InvalidArgument without being forwarded. `fail_presigned` makes presigned
    requests fail on demand; the registry's own traffic is never failed, so the registry keeps
    answering its redirects.
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
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None

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

    def reset(self) -> None:
        """Back to a clean state between tests."""
        with self._lock:
            self._requests.clear()
            self._failure = None

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

    def start(self) -> Self:
        self._server = _ProxyServer((self.host, self.port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"storage-proxy-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    # Clients that download in parallel ranges open many connections at once; the default
    # backlog of 5 would drop some SYNs and stall them for a one-second retransmit.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], proxy: StorageProxy) -> None:
        self.proxy = proxy
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that stop reading mid-blob are part of the tests; their resets are not news.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes; with Nagle on, each exchange would wait for
    # a delayed ACK (about 40 ms) and a push through the proxy would take a second.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

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
            self._answer(400, body.encode(), "application/xml")
        elif failure := proxy._take_failure(recorded):
            self._answer(failure.status, failure.body, failure.content_type)
        else:
            self._forward(proxy)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _handle

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self._may_have_body():
            # The request body is left unread, so this connection cannot carry another request.
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _may_have_body(self) -> bool:
        return (
            "Transfer-Encoding" in self.headers or int(self.headers.get("Content-Length") or 0) > 0
        )

    def _forward(self, proxy: StorageProxy) -> None:
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=120)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    upstream.putheader(name, value)
            chunked_in = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            if chunked_in:
                upstream.putheader("Transfer-Encoding", "chunked")
            upstream.endheaders()
            for piece in self._request_body(chunked_in):
                upstream.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked_in else piece)
            if chunked_in:
                upstream.send(b"0\r\n\r\n")
            self._relay_response(upstream.getresponse())
        finally:
            upstream.close()

    def _request_body(self, chunked: bool) -> Iterator[bytes]:
        if chunked:
            yield from self._chunked_request_body()
            return
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            piece = self.rfile.read(min(_CHUNK, remaining))
            if not piece:
                raise ConnectionError("client closed the connection mid-body")
            remaining -= len(piece)
            yield piece

    def _chunked_request_body(self) -> Iterator[bytes]:
        while True:
            size = int(self.rfile.readline(1024).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # Skip the trailer section, up to its empty line.
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return
            remaining = size
            while remaining > 0:
                piece = self.rfile.read(min(_CHUNK, remaining))
                if not piece:
                    raise ConnectionError("client closed the connection mid-chunk")
                remaining -= len(piece)
                yield piece
            self.rfile.readline(1024)

    def _relay_response(self, response: http.client.HTTPResponse) -> None:
        self.send_response_only(response.status, response.reason)
        headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
        has_length = any(k.lower() == "content-length" for k, _ in headers)
        bodiless = self.command == "HEAD" or response.status in (204, 304)
        chunked_out = not has_length and not bodiless
        for name, value in headers:
            self.send_header(name, value)
        if chunked_out:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if bodiless:
            return
        while piece := response.read1(_CHUNK):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked_out else piece)
        if chunked_out:
            self.wfile.write(b"0\r\n\r\n")


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
