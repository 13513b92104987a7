"""A storage account's blob endpoint as ACR's redirects see it, served from Azurite.

Clients reach `https://HOST:PORT/<container>/<blob>?<SAS>`, the shape of
`https://<account>.blob.core.windows.net/<container>/<blob>?<SAS>`; the endpoint relays to
Azurite's path-style `/devstoreaccount1/<container>/<blob>` (through `upstream`, e.g. a
FaultProxy in front of Azurite) and puts Azurite's answers into the form Azure sends:

- error bodies are Azure's compact XML, led by a UTF-8 byte order mark, with
  `Content-Length` (counting the mark), `x-ms-error-code` and `Connection: close`;
- an expired SAS is 403 `AuthenticationFailed` with the `AuthenticationErrorDetail`
  "Signature not valid in the specified time frame: Start [...] - Expiry [...] - Current
  [...]" (Azurite says `AuthorizationFailure`); a SAS without `st` counts from the request;
- a SAS request that also carries `Authorization` is refused, 403 `AuthenticationFailed`,
  "Authentication information is not given in the correct format" (Azurite ignores it);
- `Server` is Azure's: `Windows-Azure-Blob/1.0 Microsoft-HTTPAPI/2.0`, or for the refusals
  made before the blob service, `Microsoft-HTTPAPI/2.0`.

Everything else (signatures, permissions, `spr`, ranges, the blob's headers) is Azurite's own.
Each request is recorded as it arrived (RecordedRequest).
"""

from __future__ import annotations

import datetime
import http.client
import ssl
import threading
import uuid
import xml.etree.ElementTree as ElementTree
from email.utils import format_datetime
from typing import Self, cast
from urllib.parse import parse_qs, urlsplit

from tools.testbed.azurite import DEV_ACCOUNT
from tools.testbed.process import Service, free_port
from tools.testbed.proxy import RecordedRequest
from tools.testbed.relay import CHUNK, ProxyServer, RelayHandler, ServerThread, connect

AZURE_BLOB_SERVER = "Windows-Azure-Blob/1.0 Microsoft-HTTPAPI/2.0"
AZURE_HTTPAPI_SERVER = "Microsoft-HTTPAPI/2.0"
BOM = "\ufeff".encode()
_AUTH_FAILED_MESSAGE = (
    "Server failed to authenticate the request. Make sure the value of Authorization header "
    "is formed correctly including the signature."
)
_MAX_ERROR_BODY = 1 << 16


def azure_error_xml(code: str, message: str, detail: str | None = None) -> bytes:
    """An Azure Storage error body, byte for byte in the service's form (BOM included)."""
    extra = (
        f"<AuthenticationErrorDetail>{_xml_escape(detail)}</AuthenticationErrorDetail>"
        if detail is not None
        else ""
    )
    text = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{_xml_escape(code)}</Code><Message>{_xml_escape(message)}</Message>"
        f"{extra}</Error>"
    )
    return BOM + text.encode()


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _http_date(moment: datetime.datetime) -> str:
    return format_datetime(moment.astimezone(datetime.UTC), usegmt=True)


def _parse_sas_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _with_request_id(message: str, request_id: str, now: datetime.datetime) -> str:
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
    return f"{message}\nRequestId:{request_id}\nTime:{stamp}"


class BlobEndpoint(Service):
    """The blob endpoint on `host`:free port (https with `ssl_context`), relaying to `upstream`.

    `upstream` is `http(s)://HOST:PORT` of Azurite or of a proxy in front of it;
    `upstream_ssl` is what to trust when it is https. `url` is what SAS URLs start with.
    """

    def __init__(
        self,
        upstream: str,
        *,
        host: str = "127.0.0.2",
        ssl_context: ssl.SSLContext | None = None,
        upstream_ssl: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream must be http(s)://HOST:PORT, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port
        self.upstream_ssl = upstream_ssl if parts.scheme == "https" else None
        if parts.scheme == "https" and upstream_ssl is None:
            self.upstream_ssl = ssl.create_default_context()
        self.host = host
        self.port = free_port(host)
        self.ssl_context = ssl_context
        self.url = f"{'https' if ssl_context else 'http'}://{host}:{self.port}"
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._serving: ServerThread | None = None

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def sas_requests(self) -> list[RecordedRequest]:
        """The requests signed by a SAS (`sig` in the query): clients following a 307."""
        return [r for r in self.requests if "sig" in parse_qs(r.query)]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    reset = clear

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def connect_upstream(self) -> http.client.HTTPConnection:
        return connect(self.upstream_host, self.upstream_port, ssl_context=self.upstream_ssl)

    def start(self) -> Self:
        server = _EndpointServer((self.host, self.port), self)
        self._serving = ServerThread(server, name=f"blob-endpoint-{self.port}")
        return self

    def stop(self) -> None:
        if self._serving is not None:
            self._serving.stop()
            self._serving = None


class _EndpointServer(ProxyServer):
    def __init__(self, address: tuple[str, int], endpoint: BlobEndpoint) -> None:
        self.endpoint = endpoint
        super().__init__(address, _Handler, endpoint.ssl_context)


class _Handler(RelayHandler):
    def _handle(self) -> None:
        endpoint = cast(_EndpointServer, self.server).endpoint
        parts = urlsplit(self.path)
        recorded = RecordedRequest(
            method=self.command,
            path=parts.path,
            query=parts.query,
            headers=tuple(self.headers.items()),
        )
        endpoint.record(recorded)
        query = parse_qs(parts.query, keep_blank_values=True)
        if "sig" in query and recorded.header("Authorization") is not None:
            self._refuse_foreign_authorization()
            return
        upstream = endpoint.connect_upstream()
        try:
            headers = [(k, v) for k, v in self.end_to_end_headers() if k.lower() != "host"]
            headers.append(("Host", f"{endpoint.upstream_host}:{endpoint.upstream_port}"))
            try:
                response = self.forward(upstream, f"/{DEV_ACCOUNT}{self.path}", headers)
            except OSError as error:
                self.answer(502, f"blob endpoint: upstream failed: {error}\n".encode())
                return
            if response.status >= 400:
                self._relay_error(response, query)
            else:
                self._relay(response)
        finally:
            upstream.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_OPTIONS = _handle

    def _refuse_foreign_authorization(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        request_id = str(uuid.uuid4())
        body = azure_error_xml(
            "AuthenticationFailed",
            _with_request_id(_AUTH_FAILED_MESSAGE, request_id, now),
            "Authentication information is not given in the correct format. "
            "Check the value of Authorization header.",
        )
        self._answer_error(403, "AuthenticationFailed", body, request_id, now, AZURE_HTTPAPI_SERVER)

    def _relay(self, response: http.client.HTTPResponse) -> None:
        headers = [(k, v) for k, v in response.getheaders() if k.lower() != "server"]
        headers.append(("Server", AZURE_BLOB_SERVER))
        writer = self.start_answer(response.status, response.reason, headers)
        if writer is None:
            return
        expected = response.getheader("Content-Length")
        sent = 0
        try:
            while piece := response.read1(CHUNK):
                writer.write(piece)
                sent += len(piece)
        except (OSError, http.client.HTTPException):
            self.cut()
            return
        if expected is not None and sent < int(expected):
            # The upstream broke off (a fault proxy's cut): so does this answer.
            self.cut()
            return
        writer.end()

    def _relay_error(self, response: http.client.HTTPResponse, query: dict[str, list[str]]) -> None:
        raw = response.read(_MAX_ERROR_BODY)
        now = datetime.datetime.now(datetime.UTC)
        request_id = response.getheader("x-ms-request-id") or str(uuid.uuid4())
        code = response.getheader("x-ms-error-code")
        message: str | None = None
        try:
            root = ElementTree.fromstring(raw.lstrip(BOM)) if raw.strip() else None
        except ElementTree.ParseError:
            root = None
        if root is not None and root.tag == "Error":
            code = root.findtext("Code") or code
            message = root.findtext("Message")
        if code is None or (message is None and self.command != "HEAD"):
            # Not a storage error (e.g. a fault proxy's injected answer): as it came.
            self.answer(response.status, raw, response.getheaders())
            return
        detail = None
        server = AZURE_BLOB_SERVER
        expiry = _parse_sas_time(query.get("se", [None])[0])
        if code == "AuthorizationFailure" and expiry is not None and expiry < now:
            start = _parse_sas_time(query.get("st", [None])[0]) or now
            code, server = "AuthenticationFailed", AZURE_HTTPAPI_SERVER
            message = _AUTH_FAILED_MESSAGE
            detail = (
                f"Signature not valid in the specified time frame: Start [{_http_date(start)}]"
                f" - Expiry [{_http_date(expiry)}] - Current [{_http_date(now)}]"
            )
        if message is not None and "\nRequestId:" not in message:
            message = _with_request_id(message, request_id, now)
        body = azure_error_xml(code, message or "", detail)
        version = response.getheader("x-ms-version")
        self._answer_error(response.status, code, body, request_id, now, server, version)

    def _answer_error(
        self,
        status: int,
        code: str,
        body: bytes,
        request_id: str,
        now: datetime.datetime,
        server: str,
        version: str | None = None,
    ) -> None:
        # Azure closes the connection after an error; the request's body (if any) stays unread.
        self.close_connection = True
        self.send_response_only(status)
        for name, value in (
            ("Content-Length", str(len(body))),
            ("Content-Type", "application/xml"),
            ("Server", server),
            ("x-ms-request-id", request_id),
            *([("x-ms-version", version)] if version else []),
            ("x-ms-error-code", code),
            ("Date", _http_date(now)),
            ("Connection", "close"),
        ):
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
