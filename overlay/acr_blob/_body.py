"""Reading a blob body at line rate.

httpcore reads HTTP/1.1 bodies 64 KiB at a time and copies every read through h11's buffer
twice; for multi-gigabyte blobs that halves the throughput (``make bench``). When the answer has
a plain ``Content-Length`` body on HTTP/1.1, the bytes h11 already holds are taken through
``iter_raw`` (its first item drains h11's buffer), and the rest is read from the connection's
network stream (httpcore's public ``network_stream`` extension) 2 MiB at a time, never past the
announced length. The connection is not reused afterwards: h11 never saw the end of that body,
so httpcore closes it with the response. A caller that writes to a file can lend its own
buffers: the bytes are then received straight into them (``recv_into`` on the stream's
socket), one copy fewer. Anything else (chunked bodies, HTTP/2, transports without a network
stream such as mocks) goes through ``iter_raw`` unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, overload

import httpcore
import httpx

# Measured on 1 GiB: 2 MiB per read is faster than 1 MiB, sync and async (fewer wake-ups);
# async reads of 4 MiB were slower again.
READ_SIZE = 2 << 20
# Below this, the ordinary path costs nothing worth saving and keeps the connection reusable.
DIRECT_MIN_SIZE = 4 << 20


# Hands out a writable view of at most the given number of bytes, to receive into.
Lend = Callable[[int], memoryview]


@overload
def body_chunks(response: httpx.Response) -> Iterator[bytes]: ...
@overload
def body_chunks(response: httpx.Response, lend: Lend | None) -> Iterator[bytes | memoryview]: ...
def body_chunks(response: httpx.Response, lend: Lend | None = None) -> Iterator[bytes | memoryview]:
    """The raw body of ``response``, in the largest reads the connection gives.

    With ``lend``, the direct path receives straight into the views it hands out (when the
    connection is a plain or TLS socket of its own) and yields the filled part of each view.
    """
    if response.is_stream_consumed:
        # A transport may hand over a body it has already read (mocks do): take it whole.
        yield response.content
        return
    direct = _direct_stream(response)
    chunks = response.iter_raw()
    if direct is None:
        yield from chunks
        return
    stream, remaining, timeout = direct
    sock = _own_socket(stream) if lend is not None else None
    # `chunks` stays open until the end: closing it closes the response and its connection.
    try:
        first = next(chunks, b"")
        remaining -= len(first)
        if first:
            yield first
        chunk: bytes | memoryview
        while remaining > 0:
            if sock is not None and lend is not None:
                view = lend(remaining)  # outside: the lender's own errors are not the network's
                with _mapped_errors():
                    sock.settimeout(timeout)
                    chunk = view[: sock.recv_into(view)]
            else:
                with _mapped_errors():
                    chunk = stream.read(min(READ_SIZE, remaining), timeout)
            if not chunk:
                raise _ended_early(remaining)
            remaining -= len(chunk)
            yield chunk
    finally:
        close = getattr(chunks, "close", None)  # httpx returns a generator
        if close is not None:
            close()


async def abody_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The async twin of :func:`body_chunks`."""
    if response.is_stream_consumed:
        yield response.content
        return
    direct = _direct_stream(response)
    chunks = response.aiter_raw()
    if direct is None:
        async for chunk in chunks:
            yield chunk
        return
    stream, remaining, timeout = direct
    _widen_asyncio_reads(stream)
    try:
        first = await anext(chunks, b"")
        remaining -= len(first)
        if first:
            yield first
        while remaining > 0:
            with _mapped_errors():
                chunk = await stream.read(min(READ_SIZE, remaining), timeout)
            if not chunk:
                raise _ended_early(remaining)
            remaining -= len(chunk)
            yield chunk
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


def _direct_stream(response: httpx.Response) -> tuple[Any, int, float | None] | None:
    """The network stream, body length and read timeout when the direct path applies."""
    stream = response.extensions.get("network_stream")
    length = response.headers.get("Content-Length", "")
    if (
        stream is None
        or response.http_version != "HTTP/1.1"
        or "Transfer-Encoding" in response.headers
        or response.headers.get("Content-Encoding", "identity").lower() != "identity"
        or not length.isdigit()
        or int(length) < DIRECT_MIN_SIZE
    ):
        return None
    timeouts = response.request.extensions.get("timeout", {})
    return stream, int(length), timeouts.get("read")


def _widen_asyncio_reads(stream: Any) -> None:
    """Let asyncio hand over up to :data:`READ_SIZE` per read of this connection, not 256 KiB.

    asyncio's socket transport reads at most ``max_size`` (256 KiB) per wake-up, and anyio
    pauses and resumes the transport around every read: at 256 KiB, that bookkeeping costs as
    much CPU as the hash (``make bench``: 0.66x of the baseline; about 0.95x with 1 MiB reads
    and 1.05x with 2 MiB). No public API reaches the transport, so this goes through
    httpcore's and anyio's private attributes and does nothing when they are not there (other
    versions, trio, TLS, whose reads anyio makes 64 KiB at a time anyway); a test checks that
    it takes effect with the versions installed. It is safe either way: the connection is
    closed after this body, and ``max_size`` only bounds the size of a read.
    """
    transport = getattr(getattr(stream, "_stream", None), "_transport", None)
    if (
        isinstance(transport, asyncio.Transport)
        and getattr(transport, "max_size", None) == 256 * 1024
    ):
        transport.max_size = READ_SIZE  # type: ignore[attr-defined]


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


def _ended_early(remaining: int) -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(
        f"peer closed connection without sending complete message body ({remaining} bytes missing)"
    )


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    """Read errors (httpcore's, or the socket's own) as the httpx errors the overlay handles."""
    try:
        yield
    except (httpcore.TimeoutException, TimeoutError) as error:
        raise httpx.ReadTimeout(str(error)) from error
    except (httpcore.NetworkError, OSError) as error:
        raise httpx.ReadError(str(error)) from error
