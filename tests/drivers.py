"""Drives BlobClient and AsyncBlobClient through one synchronous surface, so that every case
runs against both with the same assertions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from acr_blob import AsyncBlobClient, BlobClient, BlobProperties, RetryPolicy

MODES = ["sync", "async"]


async def _no_wait(seconds: float) -> None:
    pass


# Retries and resumptions without the waits, so fault cases stay fast.
NO_WAIT = RetryPolicy(sleep=lambda seconds: None, async_sleep=_no_wait)


Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that records every request it serves."""

    def __init__(self, respond: Handler) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        # A snapshot: auth flows set headers on the request object they send again.
        self.requests.append(httpx.Request(request.method, request.url, headers=request.headers))
        return self.respond(request)


def azure_storage_error(
    request: httpx.Request,
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    body: bool = True,
) -> httpx.Response:
    """An error of Azure Blob Storage as the live service sends it (in the Azure SDKs'
    recordings): XML that starts with a UTF-8 byte-order mark, with ``x-ms-error-code``, its own
    ``x-ms-request-id`` and the client's ``x-ms-client-request-id`` echoed. ``body=False`` for
    the answer to a HEAD, which has the headers alone."""
    xml = (
        '\ufeff<?xml version="1.0" encoding="utf-8"?><Error><Code>'
        f"{code}</Code><Message>{message}\nRequestId:{request_id}\n"
        "Time:2026-11-20T10:15:30.1234567Z</Message></Error>"
    )
    headers = {
        "Content-Type": "application/xml",
        "Server": "Windows-Azure-Blob/1.0 Microsoft-HTTPAPI/2.0",
        "x-ms-request-id": request_id,
        "x-ms-version": "2021-08-06",
        "x-ms-error-code": code,
        "Connection": "close",
    }
    if "x-ms-client-request-id" in request.headers:
        headers["x-ms-client-request-id"] = request.headers["x-ms-client-request-id"]
    return httpx.Response(status, headers=headers, content=xml.encode() if body else b"")


class Driver:
    """One client configuration; each call opens a client, does one thing and closes it."""

    def __init__(self, mode: str, endpoint: str, **client_args: Any) -> None:
        self.mode = mode
        self.endpoint = endpoint
        self.client_args = client_args

    def _transport(self) -> dict[str, Any]:
        # A MockTransport serves both flavours; the test passes it once as `handler`.
        # `record` is a list that receives every request sent on the wire by a real transport,
        # `answers` one that receives each with its answer's status and headers (Answer).
        args = dict(self.client_args)
        handler = args.pop("handler", None)
        record = args.pop("record", None)
        answers = args.pop("answers", None)
        if handler is not None:
            args["transport"] = httpx.MockTransport(handler)
        elif record is not None or answers is not None:
            verify = args.get("verify", True)
            args["transport"] = (
                _RecordingTransport(record, answers, verify=verify)
                if self.mode == "sync"
                else _AsyncRecordingTransport(record, answers, verify=verify)
            )
        return args

    def iterate(self, repository: str, digest: str, **options: Any) -> bytes:
        return self._run("iterate", repository, digest, **options)

    def readall(self, repository: str, digest: str) -> bytes:
        return self._run("readall", repository, digest)

    def to_file(self, repository: str, digest: str, path: Path, **options: Any) -> BlobProperties:
        """``options``: ``progress``, ``max_concurrency``."""
        return self._run("to_file", repository, digest, path, **options)

    def properties(self, repository: str, digest: str) -> BlobProperties:
        return self._run("properties", repository, digest)

    def exists(self, repository: str, digest: str) -> bool:
        return self._run("exists", repository, digest)

    def open_size(self, repository: str, digest: str) -> int | None:
        """Open a download, read nothing, return its announced size."""
        return self._run("open_size", repository, digest)

    def _run(self, action: str, *args: Any, **options: Any) -> Any:
        if self.mode == "sync":
            with BlobClient(self.endpoint, **self._transport()) as client:
                return _sync_action(client, action, *args, **options)
        return asyncio.run(self._async_run(action, *args, **options))

    async def _async_run(self, action: str, *args: Any, **options: Any) -> Any:
        async with AsyncBlobClient(self.endpoint, **self._transport()) as client:
            return await _async_action(client, action, *args, **options)


def _snapshot(request: httpx.Request) -> httpx.Request:
    # Auth flows set headers on the request object they send again: keep what went out.
    return httpx.Request(request.method, request.url, headers=request.headers)


@dataclass(frozen=True)
class Answer:
    """A request as it went out on the wire, and the status and headers that came back."""

    request: httpx.Request
    status: int
    headers: httpx.Headers


class _RecordingTransport(httpx.HTTPTransport):
    def __init__(
        self,
        record: list[httpx.Request] | None,
        answers: list[Answer] | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.record = record
        self.answers = answers

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent = _snapshot(request)
        if self.record is not None:
            self.record.append(sent)
        response = super().handle_request(request)
        if self.answers is not None:
            self.answers.append(Answer(sent, response.status_code, response.headers))
        return response


class _AsyncRecordingTransport(httpx.AsyncHTTPTransport):
    def __init__(
        self,
        record: list[httpx.Request] | None,
        answers: list[Answer] | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.record = record
        self.answers = answers

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent = _snapshot(request)
        if self.record is not None:
            self.record.append(sent)
        response = await super().handle_async_request(request)
        if self.answers is not None:
            self.answers.append(Answer(sent, response.status_code, response.headers))
        return response


def _sync_action(client: BlobClient, action: str, *args: Any, **options: Any) -> Any:
    if action == "iterate":
        chunks = []
        with client.download_blob(*args, **options) as download:
            for chunk in download:
                chunks.append(chunk)
        return b"".join(chunks)
    if action == "readall":
        with client.download_blob(*args) as download:
            return download.readall()
    if action == "to_file":
        return client.download_blob_to_file(*args, **options)
    if action == "properties":
        return client.get_blob_properties(*args)
    if action == "exists":
        return client.blob_exists(*args)
    if action == "open_size":
        with client.download_blob(*args) as download:
            return download.size
    raise AssertionError(action)


async def _async_action(client: AsyncBlobClient, action: str, *args: Any, **options: Any) -> Any:
    if action == "iterate":
        chunks = []
        async with await client.download_blob(*args, **options) as download:
            async for chunk in download:
                chunks.append(chunk)
        return b"".join(chunks)
    if action == "readall":
        async with await client.download_blob(*args) as download:
            return await download.readall()
    if action == "to_file":
        return await client.download_blob_to_file(*args, **options)
    if action == "properties":
        return await client.get_blob_properties(*args)
    if action == "exists":
        return await client.blob_exists(*args)
    if action == "open_size":
        async with await client.download_blob(*args) as download:
            return download.size
    raise AssertionError(action)
