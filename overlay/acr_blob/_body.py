"""Reading a blob body at line rate.

httpcore reads HTTP/1.1 bodies 64 KiB at a time and copies every read through h11's buffer
twice; for multi-gigabyte blobs that halves the throughput (``make bench``). When the answer has
a plain ``Content-Length`` body on HTTP/1.1, the bytes h11 already holds are taken through
``iter_raw`` (its first item drains h11's buffer), and the rest is read from the connection's
network stream (httpcore's public ``network_stream`` extension) 1 MiB at a time, never past the
announced length. The connection is not reused afterwards: h11 never saw the end of that body,
so httpcore closes it with the response. Anything else (chunked bodies, HTTP/2, transports
without a network stream such as mocks) goes through ``iter_raw`` unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpcore
import httpx

READ_SIZE = 1 << 20
# Below this, the ordinary path costs nothing worth saving and keeps the connection reusable.
DIRECT_MIN_SIZE = 4 << 20


def body_chunks(response: httpx.Response) -> Iterator[bytes]:
    """The raw body of ``response``, in the largest reads the connection gives."""
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
    # `chunks` stays open until the end: closing it closes the response and its connection.
    try:
        first = next(chunks, b"")
        remaining -= len(first)
        if first:
            yield first
        while remaining > 0:
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


def _ended_early(remaining: int) -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(
        f"peer closed connection without sending complete message body ({remaining} bytes missing)"
    )


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    """httpcore's read errors as the httpx errors the rest of the overlay handles."""
    try:
        yield
    except httpcore.TimeoutException as error:
        raise httpx.ReadTimeout(str(error)) from error
    except httpcore.NetworkError as error:
        raise httpx.ReadError(str(error)) from error
