# Generated from acr_blob/_async/body.py by tools/unasync.py: do not edit.
"""A blob body's raw bytes in the largest reads the connection gives (see :mod:`.._fast_read`)."""

from __future__ import annotations

from collections.abc import Generator
from typing import overload

import httpx

from .._fast_read import FastReader, Lend


@overload
def body_chunks(response: httpx.Response) -> Generator[bytes, None]: ...
@overload
def body_chunks(
    response: httpx.Response, lend: Lend | None, deadline: float | None = None
) -> Generator[bytes | memoryview, None]: ...
def body_chunks(
    response: httpx.Response, lend: Lend | None = None, deadline: float | None = None
) -> Generator[bytes | memoryview, None]:
    """The raw body of ``response``: through the fast reader where it applies, else httpx's.

    With ``lend``, the fast reader receives straight into the views it hands out (when the
    connection is a socket of its own) and yields the filled part of each view. Its reads wait
    no longer than ``deadline`` (``time.monotonic()``).
    """
    if response.is_stream_consumed:
        # A transport may hand over a body it has already read (mocks do): take it whole.
        yield response.content
        return
    reader = FastReader.of(response, lend, deadline)
    chunks = response.iter_raw()
    if reader is None:
        for raw in chunks:
            yield raw
        return
    # `chunks` stays open until the end: closing it closes the response and its connection.
    try:
        first = next(chunks, b"")
        remaining = reader.remaining - len(first)
        if first:
            yield first
        while remaining > 0:
            chunk = reader.read(remaining)
            if not chunk:
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body "
                    f"({remaining} bytes missing)"
                )
            remaining -= len(chunk)
            yield chunk
    finally:
        reader.close()
        chunks.close()  # type: ignore[attr-defined]
