"""The runner for this SDK: `python acr_blob_runner.py [--async] < request.json`.

Blob scenarios: `download_blob_to_file(repository, digest, output_dir/blob-<i>)`, with the
request's `max_concurrency` when it gives one. Pull scenarios: `pull("HOST:PORT/REPOSITORY:TAG",
output_dir/pull-<i>, platform=...)`, an OCI image layout, or with `files=True` the titled
layers as files. On the ACR deployment the credential is an AAD one (an object with
`get_token(*scopes)`, as azure-identity's) handing out the request's `aad_token`, as the
Azure SDKs' runners use; elsewhere the user name and password, if any.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import acr_blob
from acr_blob import AsyncBlobClient, BlobClient, Credential

AAD_TOKEN_LIFETIME = 3600


class _AccessToken(NamedTuple):
    token: str
    expires_on: int


class _AADCredential:
    """An Azure AD credential's shape (azure-identity's `get_token`), handing out one token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> _AccessToken:
        return _AccessToken(self._token, int(time.time()) + AAD_TOKEN_LIFETIME)

    def __repr__(self) -> str:
        return "_AADCredential(<redacted>)"


def _client_args(request: dict[str, Any]) -> tuple[Credential, dict[str, Any]]:
    credentials = request.get("credentials")
    credential: Credential = (
        (credentials["username"], credentials["password"]) if credentials else None
    )
    if request.get("aad_token"):
        credential = _AADCredential(request["aad_token"])
    verify: bool | str = request["ca_cert"] or True
    return credential, {"verify": verify, "timeout": float(request["timeout"])}


def _download_args(request: dict[str, Any]) -> dict[str, Any]:
    concurrency = request.get("max_concurrency")
    return {} if concurrency is None else {"max_concurrency": int(concurrency)}


def _outcome(started: float, error: BaseException | None) -> dict[str, Any]:
    return {
        "ok": error is None,
        "error": None if error is None else f"{type(error).__name__}: {error}"[:300],
        "elapsed": round(time.monotonic() - started, 3),
    }


def _reference(request: dict[str, Any]) -> str:
    """`HOST:PORT/REPOSITORY:TAG`, what `pull` takes."""
    host = urlsplit(request["registry"]).netloc
    return f"{host}/{request['repository']}:{request['tag']}"


def _pull_args(request: dict[str, Any]) -> dict[str, Any]:
    if request["pull"] == "files":
        return {"files": True}
    return {"platform": request["platform"]}


def run_sync(request: dict[str, Any]) -> list[dict[str, Any]]:
    credential, args = _client_args(request)
    outcomes = []
    with BlobClient(request["registry"], credential, **args) as client:
        for i in range(request["downloads"]):
            started, error = time.monotonic(), None
            try:
                if request.get("pull"):
                    target = Path(request["output_dir"]) / f"pull-{i}"
                    client.pull(_reference(request), target, **_pull_args(request))
                else:
                    target = Path(request["output_dir"]) / f"blob-{i}"
                    client.download_blob_to_file(
                        request["repository"], request["digest"], target, **_download_args(request)
                    )
            except Exception as caught:
                error = caught
            outcomes.append(_outcome(started, error))
    return outcomes


async def run_async(request: dict[str, Any]) -> list[dict[str, Any]]:
    credential, args = _client_args(request)
    outcomes = []
    async with AsyncBlobClient(request["registry"], credential, **args) as client:
        for i in range(request["downloads"]):
            started, error = time.monotonic(), None
            try:
                if request.get("pull"):
                    target = Path(request["output_dir"]) / f"pull-{i}"
                    await client.pull(_reference(request), target, **_pull_args(request))
                else:
                    target = Path(request["output_dir"]) / f"blob-{i}"
                    await client.download_blob_to_file(
                        request["repository"], request["digest"], target, **_download_args(request)
                    )
            except Exception as caught:
                error = caught
            outcomes.append(_outcome(started, error))
    return outcomes


def main() -> None:
    request = json.load(sys.stdin)
    flavour = "async" if "--async" in sys.argv else "sync"
    downloads = asyncio.run(run_async(request)) if flavour == "async" else run_sync(request)
    name = f"acr-blob {acr_blob.__version__} ({flavour})"
    json.dump({"client": name, "unsupported": None, "downloads": downloads}, sys.stdout)


if __name__ == "__main__":
    main()
