"""HTTP/1.1 plumbing shared by the testbed's proxies: streaming a request up to the upstream,
streaming its answer down, and breaking a connection off mid-body on purpose.

Bodies travel in pieces of at most CHUNK bytes; blobs may be far larger than memory wants.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import socket
import ssl
import struct
import termios
import threading
import time
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from typing import Any, cast

CHUNK = 1 << 20
# Hop-by-hop headers (RFC 9110 7.6.1) stay on their own hop; Expect is answered here (the
# handler sends `100 Continue` itself) and http.client cannot relay it.
HOP_BY_HOP = frozenset(
    {
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
)
# A reset discards whatever the kernel has not delivered yet; this long is waited for it first.
_DELIVERY_WAIT = 5.0


class ProxyServer(ThreadingHTTPServer):
    """The testbed's threaded HTTP/1.1 server; https with `ssl_context` (tls.server_ssl_context).

    Over https each connection's handshake runs in its own handler thread, not in the accept
    loop, so that one slow or failing client holds up no other.
    """

    daemon_threads = True
    # Clients that download in parallel ranges open many connections at once; the default
    # backlog of 5 would drop some SYNs and stall them for a one-second retransmit.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.ssl_context is None:
            return sock, address
        wrapped = self.ssl_context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        )
        return wrapped, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError):
                # A client that does not trust the certificate hangs up here: nothing to answer.
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that stop reading mid-blob are part of the tests; their resets are not news.
        pass


class ServerThread:
    """Runs a server's accept loop in a daemon thread until stop()."""

    def __init__(self, server: ProxyServer, name: str) -> None:
        self.server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5.0)


def connect(
    host: str, port: int, *, ssl_context: ssl.SSLContext | None = None, timeout: float = 120.0
) -> http.client.HTTPConnection:
    if ssl_context is not None:
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl_context)
    return http.client.HTTPConnection(host, port, timeout=timeout)


class BodyWriter:
    """Writes a response body as it comes, in chunked framing when its length is unknown."""

    def __init__(self, wfile: BufferedIOBase, *, chunked: bool) -> None:
        self._wfile = wfile
        self._chunked = chunked

    def write(self, piece: bytes) -> None:
        # An empty chunk would be the end-of-body marker.
        if not piece:
            return
        self._wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if self._chunked else piece)

    def end(self) -> None:
        if self._chunked:
            self._wfile.write(b"0\r\n\r\n")


class RelayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes; with Nagle on, each exchange would wait for
    # a delayed ACK (about 40 ms) and a push through a proxy would take a second.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def end_to_end_headers(self) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]

    def forward(
        self, upstream: http.client.HTTPConnection, path: str, headers: Iterable[tuple[str, str]]
    ) -> http.client.HTTPResponse:
        """Send this request, body streamed, to `upstream` and return its response.

        Host goes along as the client sent it, so that absolute URLs the upstream builds from
        it (a registry's upload Locations) keep naming the proxy.
        """
        upstream.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            upstream.putheader(name, value)
        chunked_in = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if chunked_in:
            upstream.putheader("Transfer-Encoding", "chunked")
        upstream.endheaders()
        for piece in self.request_body():
            upstream.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked_in else piece)
        if chunked_in:
            upstream.send(b"0\r\n\r\n")
        return upstream.getresponse()

    def request_body(self) -> Iterator[bytes]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            yield from self._chunked_request_body()
            return
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            piece = self.rfile.read(min(CHUNK, remaining))
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
                piece = self.rfile.read(min(CHUNK, remaining))
                if not piece:
                    raise ConnectionError("client closed the connection mid-chunk")
                remaining -= len(piece)
                yield piece
            self.rfile.readline(1024)

    def may_have_body(self) -> bool:
        return (
            "Transfer-Encoding" in self.headers or int(self.headers.get("Content-Length") or 0) > 0
        )

    def answer(self, status: int, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Answer without the upstream; a Content-Length is added, hop-by-hop headers dropped."""
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.may_have_body():
            # The request body is left unread, so this connection cannot carry another request.
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def start_answer(
        self, status: int, reason: str, headers: Iterable[tuple[str, str]]
    ) -> BodyWriter | None:
        """Send status and end-to-end headers; None when the answer has no body to write."""
        self.send_response_only(status, reason)
        kept = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]
        has_length = any(k.lower() == "content-length" for k, _ in kept)
        bodiless = self.command == "HEAD" or status in (204, 304)
        chunked = not has_length and not bodiless
        for name, value in kept:
            self.send_header(name, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        return None if bodiless else BodyWriter(self.wfile, chunked=chunked)

    def cut(self, *, reset: bool = False) -> None:
        """End the connection now, whatever was promised: FIN, or with `reset` an RST.

        The client first receives everything written so far, then sees its peer close early
        (FIN) or a connection reset (RST).
        """
        self.close_connection = True
        sock = cast(socket.socket, self.connection)
        if not reset:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            return
        _wait_until_delivered(sock, _DELIVERY_WAIT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # rfile still holds the descriptor: the RST leaves when finish() closes it, and the
        # server's own shutdown of the socket then fails quietly instead of sending a FIN first.
        sock.close()


def _wait_until_delivered(sock: socket.socket, timeout: float) -> None:
    """Wait until the peer has acknowledged every byte written (Linux's SIOCOUTQ reaches 0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
        except OSError:
            return
        if struct.unpack("i", raw)[0] == 0:
            return
        time.sleep(0.005)
