"""Pushes through the registry's real protocol: blob uploads (POST, then PUT with the digest)
and manifest PUTs."""

from __future__ import annotations

import hashlib
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx

from tools.testbed.token_server import TESTBED_USER_AGENT

_FILE_CHUNK = 1 << 20


def push_blob(
    registry_url: str,
    repository: str,
    data: bytes,
    *,
    auth: httpx.Auth | tuple[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
    algorithm: str = "sha256",
) -> str:
    """Upload `data` as one blob of `repository`; returns its digest, `ALGORITHM:HEX`.

    With another `algorithm` than sha256, distribution 2.8 checks the content against it,
    stores the blob under its sha256 digest and links the given digest to that one: a GET by
    the given digest answers with `Docker-Content-Digest: sha256:...`.
    """
    digest = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
    with _client(auth, verify) as client:
        location = _start_upload(client, registry_url, repository)
        _finish_upload(client, location, digest, content=data, length=len(data))
    return digest


def push_blob_file(
    registry_url: str,
    repository: str,
    path: Path,
    *,
    auth: httpx.Auth | tuple[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
    algorithm: str = "sha256",
) -> str:
    """Like push_blob for a file of any size: hashed, then sent, in chunks."""
    hasher = hashlib.new(algorithm)
    with path.open("rb") as f:
        while chunk := f.read(_FILE_CHUNK):
            hasher.update(chunk)
    digest = f"{algorithm}:{hasher.hexdigest()}"
    with _client(auth, verify) as client:
        location = _start_upload(client, registry_url, repository)
        _finish_upload(client, location, digest, content=_chunks(path), length=path.stat().st_size)
    return digest


def put_manifest(
    registry_url: str,
    repository: str,
    reference: str,
    body: bytes,
    media_type: str,
    *,
    auth: httpx.Auth | tuple[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
) -> str:
    """`PUT /v2/REPOSITORY/manifests/REFERENCE` (a tag or the body's digest) with these exact
    bytes as `media_type`; returns their sha256 digest, checked against the registry's
    `Docker-Content-Digest`.

    A refusal raises httpx.HTTPStatusError with the registry's error codes in its message
    (see tools/testbed/images.py for what distribution 2.8 refuses).
    """
    digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
    url = f"{registry_url.rstrip('/')}/v2/{repository}/manifests/{reference}"
    with _client(auth, verify) as client:
        response = client.put(url, content=body, headers={"Content-Type": media_type})
    if response.status_code != 201:
        raise httpx.HTTPStatusError(
            f"pushing manifest {repository}:{reference} ({len(body)} bytes, {media_type}): "
            f"{response.status_code} {_error_codes(response)} {response.text[:500]}",
            request=response.request,
            response=response,
        )
    served = response.headers.get("Docker-Content-Digest")
    if served != digest:
        raise httpx.HTTPStatusError(
            f"pushing manifest {repository}:{reference}: the registry says {served!r}, "
            f"the bytes are {digest}",
            request=response.request,
            response=response,
        )
    return digest


def _error_codes(response: httpx.Response) -> list[str]:
    """The `errors[].code` of a distribution error body (empty if it is not one)."""
    try:
        errors = json.loads(response.content)["errors"]
        return [str(error["code"]) for error in errors]
    except (ValueError, KeyError, TypeError):
        return []


def _client(
    auth: httpx.Auth | tuple[str, str] | None, verify: ssl.SSLContext | bool
) -> httpx.Client:
    # Generous read timeout: the registry answers the final PUT only once the blob is stored.
    # The User-Agent marks the pushes as the testbed's own, which request logs leave out.
    return httpx.Client(
        auth=auth,
        verify=verify,
        trust_env=False,
        timeout=httpx.Timeout(10.0, read=300.0),
        headers={"User-Agent": TESTBED_USER_AGENT},
    )


def _start_upload(client: httpx.Client, registry_url: str, repository: str) -> httpx.URL:
    url = f"{registry_url.rstrip('/')}/v2/{repository}/blobs/uploads/"
    response = client.post(url)
    if response.status_code != 202 or "Location" not in response.headers:
        raise httpx.HTTPStatusError(
            f"starting an upload: {response.status_code} {response.text[:500]}",
            request=response.request,
            response=response,
        )
    # The Location may be absolute or relative, and already carries `?_state=...`.
    return httpx.URL(url).join(response.headers["Location"])


def _finish_upload(
    client: httpx.Client,
    location: httpx.URL,
    digest: str,
    *,
    content: bytes | Iterator[bytes],
    length: int,
) -> None:
    separator = "&" if location.query else "?"
    url = f"{location}{separator}{urlencode({'digest': digest})}"
    # An explicit Content-Length keeps httpx from sending an iterator body chunked.
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
    response = client.put(url, content=content, headers=headers)
    if response.status_code != 201:
        raise httpx.HTTPStatusError(
            f"completing an upload: {response.status_code} {response.text[:500]}",
            request=response.request,
            response=response,
        )


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_FILE_CHUNK):
            yield chunk
