"""The fast read of a blob body: the one place that reads beneath httpx's public API.

httpcore reads HTTP/1.1 bodies 64 KiB at a time and copies every read through h11's buffer
twice; for multi-gigabyte blobs that halves the throughput (``make bench``). When the answer has
a plain ``Content-Length`` body on HTTP/1.1, the bytes h11 already holds are taken through
``iter_raw`` (its first item drains h11's buffer), and the rest is read from the connection's
network stream (httpcore's public ``network_stream`` extension) 2 MiB at a time, never past the
announced length. The connection is not reused afterwards: h11 never saw the end of that body,
so httpcore closes it with the response. A caller that writes to a file can lend its own
buffers: the bytes are then received (or decrypted) straight into them, one copy fewer. Over
TLS, every record at hand is taken in one read, not one 16 KiB record at a time.

:class:`FastReader` and :class:`AsyncFastReader` are the whole interface: ``of(response, lend)``
gives a reader, or ``None`` for httpx's own ``iter_raw`` (chunked bodies, HTTP/2, transports
without a network stream such as mocks, or the switch below), and ``read(remaining)`` the next
bytes. The async reader goes further, beneath anyio's private attributes (see
:class:`_TakenSocket`); where they are not what it expects, it reads the network stream.

Setting the environment variable ``ACR_BLOB_FAST_READ=0`` turns all of this off: every body
is then read through ``iter_raw``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Self, cast

import httpcore
import httpx

if TYPE_CHECKING:
    import asyncio

SWITCH = "ACR_BLOB_FAST_READ"
# Seconds an async read may keep the event loop before it lets other tasks run.
_YIELD_EVERY = 0.005
# Measured on 1 GiB: 2 MiB per read is faster than 1 MiB, sync and async (fewer wake-ups);
# async reads of 4 MiB were slower again.
READ_SIZE = 2 << 20
# Below this, the ordinary path costs nothing worth saving and keeps the connection reusable.
DIRECT_MIN_SIZE = 4 << 20


# Hands out a writable view of at most the given number of bytes, to receive into.
Lend = Callable[[int], memoryview]


class _ReadTimeout:
    """The read timeout, cut short where the download's deadline comes sooner."""

    def __init__(self, timeout: float | None, deadline: float | None) -> None:
        self._timeout = timeout
        self._deadline = deadline

    def __call__(self) -> float | None:
        if self._deadline is None:
            return self._timeout
        left = max(self._deadline - time.monotonic(), 0.001)  # 0 would mean "do not wait"
        return left if self._timeout is None else min(self._timeout, left)


def enabled() -> bool:
    """Whether the fast read may be used (``ACR_BLOB_FAST_READ`` is not ``0``)."""
    return os.environ.get(SWITCH, "1").strip() != "0"


class _BodyReader:
    """What both readers hold: the body's stream, its length and the read timeout."""

    def __init__(
        self,
        stream: Any,
        length: int,
        timeout: float | None,
        lend: Lend | None,
        deadline: float | None = None,
    ) -> None:
        self.remaining = length
        self._stream = stream
        self._timeouts = _ReadTimeout(timeout, deadline)
        self._lend, self._copy = _lender_for(self._take_socket(), lend)

    def _take_socket(self) -> bool:
        """Find the socket to read the body from directly; whether it speaks TLS itself."""
        raise NotImplementedError

    @classmethod
    def of(
        cls, response: httpx.Response, lend: Lend | None = None, deadline: float | None = None
    ) -> Self | None:
        """A reader of ``response``'s body, or ``None`` for httpx's ``iter_raw``; no read waits
        past ``deadline`` (``time.monotonic()``)."""
        direct = _direct_stream(response)
        return None if direct is None else cls(*direct, lend, deadline)


class FastReader(_BodyReader):
    """The rest of a body, read from its connection's own socket (or network stream).

    ``remaining`` is the body's announced length; the caller takes ``iter_raw``'s first item
    first (what h11 holds already) and then calls :meth:`read` with what is left.
    """

    def _take_socket(self) -> bool:
        self._sock = _own_socket(self._stream)
        return isinstance(self._sock, ssl.SSLSocket)

    def read(self, remaining: int) -> bytes | memoryview:
        """The next bytes, at most ``remaining``: into a lent view where there is one."""
        chunk: bytes | memoryview
        if self._sock is not None and self._lend is not None:
            view = self._lend(remaining)  # outside: the lender's own errors are not the network's
            with _mapped_errors():
                chunk = view[: _receive_into(self._sock, view, self._timeouts())]
            return bytes(chunk) if self._copy else chunk
        with _mapped_errors():
            return cast(bytes, self._stream.read(min(READ_SIZE, remaining), self._timeouts()))

    def close(self) -> None:
        pass


class AsyncFastReader(_BodyReader):
    """:class:`FastReader` for the async client: once anyio holds no unread bytes of the body,
    the rest is received from the connection's socket with the event loop's ``sock_recv`` /
    ``sock_recv_into``, into the lent views when there are any (see :class:`_TakenSocket`)."""

    def _take_socket(self) -> bool:
        self._taken = _TakenSocket.of(self._stream)
        self._yielded = time.monotonic()
        return self._taken is not None and self._taken.tls

    async def read(self, remaining: int) -> bytes | memoryview:
        import asyncio

        # A socket read with bytes at hand returns without suspending the task: now and then,
        # let the loop run the others.
        if time.monotonic() - self._yielded > _YIELD_EVERY:
            await asyncio.sleep(0)
            self._yielded = time.monotonic()
        taken = self._taken
        if taken is not None and taken.ready():
            if self._lend is not None:
                view = self._lend(remaining)
                with _mapped_errors():
                    got = view[: await taken.recv_into(view, self._timeouts())]
                return bytes(got) if self._copy else got
            with _mapped_errors():
                return await taken.recv(min(READ_SIZE, remaining), self._timeouts())
        with _mapped_errors():
            chunk = await self._stream.read(min(READ_SIZE, remaining), self._timeouts())
        return cast(bytes, chunk)

    def close(self) -> None:
        if self._taken is not None:
            self._taken.close()


def _lender_for(tls: bool, lend: Lend | None) -> tuple[Lend | None, bool]:
    """The lender to receive with, and whether what it lends must be handed out as copies.

    Over TLS, a caller that lends nothing gets a buffer of our own, so that the records at hand
    are gathered into one read; a read of the stream would allocate READ_SIZE for every 16 KiB
    record. Its views are reused, so the chunks handed out are copies.
    """
    if lend is not None or not tls:
        return lend, False
    buffer = memoryview(bytearray(READ_SIZE))
    return (lambda limit: buffer[: min(READ_SIZE, limit)]), True


def _receive_into(sock: socket.socket, view: memoryview, timeout: float | None) -> int:
    """Receive into ``view``: what the first read gives and, over TLS, every further record
    already at hand, up to the view's end.

    A TLS read hands over one record (16 KiB at most): without gathering them, every 16 KiB
    would make its own trip through the hash, the verifier and the caller (``make bench``-style
    runs over TLS: 180 MB/s for sync iteration, 500 with the records gathered).
    """
    sock.settimeout(timeout)
    count = sock.recv_into(view)
    if not (count and isinstance(sock, ssl.SSLSocket)):
        return count
    sock.settimeout(0)  # only the first read waits
    try:
        while count < len(view) and (more := sock.recv_into(view[count:])):
            count += more
    except OSError:
        # Nothing more at hand (SSLWantReadError), or a failure: the bytes received so far
        # are good, and the next read, which waits, meets the failure again.
        pass
    finally:
        sock.settimeout(timeout)
    return count


def _direct_stream(response: httpx.Response) -> tuple[Any, int, float | None] | None:
    """The network stream, body length and read timeout when the direct path applies."""
    stream = response.extensions.get("network_stream")
    length = response.headers.get("Content-Length", "")
    if (
        not enabled()
        or stream is None
        or response.http_version != "HTTP/1.1"
        or "Transfer-Encoding" in response.headers
        or response.headers.get("Content-Encoding", "identity").lower() != "identity"
        or not length.isdigit()
        or int(length) < DIRECT_MIN_SIZE
    ):
        return None
    timeouts = response.request.extensions.get("timeout", {})
    return stream, int(length), timeouts.get("read")


class _TakenSocket:
    """An asyncio connection's socket, read directly once anyio has handed out all it read.

    anyio reads through an asyncio transport and protocol: every read pauses and resumes the
    transport, copies through the protocol's queue and, by asyncio's default, reads 256 KiB at
    a time. For a multi-gigabyte body that bookkeeping costs about as much CPU as the hash
    (``make bench``: 0.66x of the baseline). Between reads anyio keeps the transport paused, so
    nothing else reads the socket: once anyio's queue is empty, the body's remaining bytes are
    received with the loop's own socket calls on a duplicate of the descriptor (asyncio refuses
    them on a descriptor a transport owns), straight into a lent buffer when there is one.

    Over TLS, anyio decrypts with an ``ssl.SSLObject`` fed from memory, one record (16 KiB) per
    read, with that bookkeeping for each (about a third of the sync client's throughput). The
    ciphertext is then received here and fed to that same object, and every record at hand is
    decrypted in one read: the TLS session goes on where anyio left it.

    No public API reaches the transport: this goes through httpcore's and anyio's private
    attributes, and :meth:`of` gives ``None`` (the ordinary reads) when they are not there or
    the connection is not an asyncio socket (trio, TLS inside a proxy's TLS tunnel, other
    versions); tests check that it takes effect with the versions installed. The connection is
    closed after this body.
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        read_event: asyncio.Event,
        tls: tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO] | None,
    ) -> None:
        self._transport = transport
        self._read_event = read_event
        self._tls = tls
        self._sock: socket.socket | None = None
        self._refused = False
        self._ciphertext: memoryview | None = None

    @property
    def tls(self) -> bool:
        return self._tls is not None

    @classmethod
    def of(cls, stream: Any) -> _TakenSocket | None:
        import asyncio

        inner = getattr(stream, "_stream", None)
        tls = None
        ssl_object = getattr(inner, "_ssl_object", None)
        if isinstance(ssl_object, ssl.SSLObject):
            incoming = getattr(inner, "_read_bio", None)
            outgoing = getattr(inner, "_write_bio", None)
            if not (isinstance(incoming, ssl.MemoryBIO) and isinstance(outgoing, ssl.MemoryBIO)):
                return None
            tls = (ssl_object, incoming, outgoing)
            inner = getattr(inner, "transport_stream", None)
        transport = getattr(inner, "_transport", None)
        if not isinstance(transport, asyncio.Transport):
            return None
        try:  # asyncio's base class leaves these to the transports
            read_event = getattr(transport.get_protocol(), "read_event", None)
            transport.is_reading()
        except NotImplementedError:
            return None
        sock = transport.get_extra_info("socket")
        if (
            not isinstance(read_event, asyncio.Event)
            or transport.get_extra_info("sslcontext") is not None
            or getattr(sock, "type", None) != socket.SOCK_STREAM
        ):
            return None
        return cls(transport, read_event, tls)

    def ready(self) -> bool:
        """Whether the socket is read directly from now on: anyio holds no bytes, reads none."""
        if self._sock is not None:
            return True
        transport = self._transport
        if (
            self._refused
            or self._read_event.is_set()
            or transport.is_reading()
            or transport.is_closing()
        ):
            return False
        try:
            self._sock = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
        except OSError:  # out of descriptors, say: anyio's reads still work
            self._refused = True
            return False
        self._sock.setblocking(False)
        return True

    async def recv_into(self, view: memoryview, timeout: float | None) -> int:
        import asyncio

        assert self._sock is not None
        async with asyncio.timeout(timeout):
            if self._tls is not None:
                return await self._decrypt_into(view)
            return await asyncio.get_running_loop().sock_recv_into(self._sock, view)

    async def recv(self, size: int, timeout: float | None) -> bytes:
        """Plain TCP only: over TLS, the reader always lends (:func:`_lender_for`)."""
        import asyncio

        assert self._sock is not None and self._tls is None
        async with asyncio.timeout(timeout):
            return await asyncio.get_running_loop().sock_recv(self._sock, size)

    async def _decrypt_into(self, view: memoryview) -> int:
        """Decrypt into ``view`` every record at hand; wait for ciphertext only while empty."""
        import asyncio

        assert self._sock is not None and self._tls is not None
        ssl_object, incoming, outgoing = self._tls
        if self._ciphertext is None:
            self._ciphertext = memoryview(bytearray(READ_SIZE))
        ciphertext = self._ciphertext
        count = 0
        try:
            while count < len(view):
                try:
                    # With a buffer, read() gives a count (typeshed says bytes).
                    got = cast(int, ssl_object.read(len(view) - count, view[count:]))
                except ssl.SSLWantReadError:
                    pass
                else:
                    if not got:  # the peer's close_notify
                        break
                    count += got
                    continue
                try:
                    received = self._sock.recv_into(ciphertext)
                except BlockingIOError:
                    if count:
                        break
                    loop = asyncio.get_running_loop()
                    received = await loop.sock_recv_into(self._sock, ciphertext)
                if not received:
                    incoming.write_eof()  # the next read raises SSLEOFError: a broken body
                    if count:
                        break
                else:
                    incoming.write(ciphertext[:received])
        finally:
            if outgoing.pending:  # what the TLS session has to answer (a key update, say)
                await asyncio.get_running_loop().sock_sendall(self._sock, outgoing.read())
        return count

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()


def _own_socket(stream: Any) -> socket.socket | None:
    """The socket that ``stream`` reads from, when reading it directly gives the same bytes.

    That is the case for a plain TCP socket and for a TLS socket (``ssl.SSLSocket``) that does
    its own decryption; not for TLS inside a TLS tunnel (an HTTPS proxy), whose inner layer is an
    ``ssl.SSLObject`` over the outer socket, nor for the async backends' transport sockets.
    """
    sock = stream.get_extra_info("socket")
    ssl_object = stream.get_extra_info("ssl_object")
    if type(sock) is socket.socket and ssl_object is None:
        return sock
    if isinstance(sock, ssl.SSLSocket) and not isinstance(ssl_object, ssl.SSLObject):
        return sock
    return None


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    """Read errors (httpcore's, or the socket's own) as the httpx errors the overlay handles."""
    try:
        yield
    except (httpcore.TimeoutException, TimeoutError) as error:
        raise httpx.ReadTimeout(str(error)) from error
    except (httpcore.NetworkError, OSError) as error:
        raise httpx.ReadError(str(error)) from error
