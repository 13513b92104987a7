from http import HTTPStatus
from io import BytesIO
from typing import Any, cast
from urllib.parse import quote

import httpx

from ...client import AuthenticatedClient, Client
from ...models.acr_errors import AcrErrors
from ...types import UNSET, File, Response, Unset


def _get_kwargs(
    name: str,
    digest: str,
    *,
    ns: str | Unset = UNSET,
    range_: str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(range_, Unset):
        headers["Range"] = range_

    params: dict[str, Any] = {}

    params["ns"] = ns

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v2/{name}/blobs/{digest}".format(
            name=quote(str(name), safe=""),
            digest=quote(str(digest), safe=""),
        ),
        "params": params,
    }

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> AcrErrors | Any | File:
    if response.status_code == 200:
        response_200 = File(payload=BytesIO(response.content))

        return response_200

    if response.status_code == 206:
        response_206 = File(payload=BytesIO(response.content))

        return response_206

    if response.status_code == 307:
        response_307 = cast(Any, None)
        return response_307

    if response.status_code == 401:
        response_401 = AcrErrors.from_dict(response.json())

        return response_401

    if response.status_code == 404:
        response_404 = AcrErrors.from_dict(response.json())

        return response_404

    response_default = AcrErrors.from_dict(response.json())

    return response_default


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[AcrErrors | Any | File]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    name: str,
    digest: str,
    *,
    client: AuthenticatedClient | Client,
    ns: str | Unset = UNSET,
    range_: str | Unset = UNSET,
) -> Response[AcrErrors | Any | File]:
    """Download a blob.

     Answers 200 with the blob's bytes, 206 with a slice of them when `Range` is sent, or 307 to a signed
    storage URL that serves the bytes (Azure Container Registry and registries on S3-style storage do
    this). Clients must follow the redirect without forwarding their credentials to the storage host,
    and should verify the body against the requested digest.

    Args:
        name (str):
        digest (str):
        ns (str | Unset):
        range_ (str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AcrErrors | Any | File]
    """

    kwargs = _get_kwargs(
        name=name,
        digest=digest,
        ns=ns,
        range_=range_,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    name: str,
    digest: str,
    *,
    client: AuthenticatedClient | Client,
    ns: str | Unset = UNSET,
    range_: str | Unset = UNSET,
) -> AcrErrors | Any | File | None:
    """Download a blob.

     Answers 200 with the blob's bytes, 206 with a slice of them when `Range` is sent, or 307 to a signed
    storage URL that serves the bytes (Azure Container Registry and registries on S3-style storage do
    this). Clients must follow the redirect without forwarding their credentials to the storage host,
    and should verify the body against the requested digest.

    Args:
        name (str):
        digest (str):
        ns (str | Unset):
        range_ (str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AcrErrors | Any | File
    """

    return sync_detailed(
        name=name,
        digest=digest,
        client=client,
        ns=ns,
        range_=range_,
    ).parsed


async def asyncio_detailed(
    name: str,
    digest: str,
    *,
    client: AuthenticatedClient | Client,
    ns: str | Unset = UNSET,
    range_: str | Unset = UNSET,
) -> Response[AcrErrors | Any | File]:
    """Download a blob.

     Answers 200 with the blob's bytes, 206 with a slice of them when `Range` is sent, or 307 to a signed
    storage URL that serves the bytes (Azure Container Registry and registries on S3-style storage do
    this). Clients must follow the redirect without forwarding their credentials to the storage host,
    and should verify the body against the requested digest.

    Args:
        name (str):
        digest (str):
        ns (str | Unset):
        range_ (str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AcrErrors | Any | File]
    """

    kwargs = _get_kwargs(
        name=name,
        digest=digest,
        ns=ns,
        range_=range_,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    name: str,
    digest: str,
    *,
    client: AuthenticatedClient | Client,
    ns: str | Unset = UNSET,
    range_: str | Unset = UNSET,
) -> AcrErrors | Any | File | None:
    """Download a blob.

     Answers 200 with the blob's bytes, 206 with a slice of them when `Range` is sent, or 307 to a signed
    storage URL that serves the bytes (Azure Container Registry and registries on S3-style storage do
    this). Clients must follow the redirect without forwarding their credentials to the storage host,
    and should verify the body against the requested digest.

    Args:
        name (str):
        digest (str):
        ns (str | Unset):
        range_ (str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AcrErrors | Any | File
    """

    return (
        await asyncio_detailed(
            name=name,
            digest=digest,
            client=client,
            ns=ns,
            range_=range_,
        )
    ).parsed
