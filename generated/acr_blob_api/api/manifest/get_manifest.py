from http import HTTPStatus
from io import BytesIO
from typing import Any
from urllib.parse import quote

import httpx

from ...client import AuthenticatedClient, Client
from ...models.acr_errors import AcrErrors
from ...types import UNSET, File, Response, Unset


def _get_kwargs(
    name: str,
    reference: str,
    *,
    ns: str | Unset = UNSET,
    accept: str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(accept, Unset):
        headers["Accept"] = accept

    params: dict[str, Any] = {}

    params["ns"] = ns

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v2/{name}/manifests/{reference}".format(
            name=quote(str(name), safe=""),
            reference=quote(str(reference), safe=""),
        ),
        "params": params,
    }

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> AcrErrors | File:
    if response.status_code == 200:
        response_200 = File(payload=BytesIO(response.content))

        return response_200

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
) -> Response[AcrErrors | File]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    name: str,
    reference: str,
    *,
    client: AuthenticatedClient | Client,
    ns: str | Unset = UNSET,
    accept: str | Unset = UNSET,
) -> Response[AcrErrors | File]:
    """Download a manifest.

     Answers 200 with the manifest's bytes: a JSON document whose `Content-Type` is its media type
    (`application/vnd.oci.image.manifest.v1+json`, `application/vnd.oci.image.index.v1+json`, or a
    Docker v2 manifest or manifest list). Its digest is computed over these exact bytes, so the body is
    declared here as binary, to be kept as received rather than re-serialised.

    Args:
        name (str):
        reference (str):
        ns (str | Unset):
        accept (str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AcrErrors | File]
    """

    kwargs = _get_kwargs(
        name=name,
        reference=reference,
        ns=ns,
        accept=accept,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    name: str,
    reference: str,
    *,
    client: AuthenticatedClient | Client,
    ns: str | Unset = UNSET,
    accept: str | Unset = UNSET,
) -> AcrErrors | File | None:
    """Download a manifest.

     Answers 200 with the manifest's bytes: a JSON document whose `Content-Type` is its media type
    (`application/vnd.oci.image.manifest.v1+json`, `application/vnd.oci.image.index.v1+json`, or a
    Docker v2 manifest or manifest list). Its digest is computed over these exact bytes, so the body is
    declared here as binary, to be kept as received rather than re-serialised.

    Args:
        name (str):
        reference (str):
        ns (str | Unset):
        accept (str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AcrErrors | File
    """

    return sync_detailed(
        name=name,
        reference=reference,
        client=client,
        ns=ns,
        accept=accept,
    ).parsed


async def asyncio_detailed(
    name: str,
    reference: str,
    *,
    client: AuthenticatedClient | Client,
    ns: str | Unset = UNSET,
    accept: str | Unset = UNSET,
) -> Response[AcrErrors | File]:
    """Download a manifest.

     Answers 200 with the manifest's bytes: a JSON document whose `Content-Type` is its media type
    (`application/vnd.oci.image.manifest.v1+json`, `application/vnd.oci.image.index.v1+json`, or a
    Docker v2 manifest or manifest list). Its digest is computed over these exact bytes, so the body is
    declared here as binary, to be kept as received rather than re-serialised.

    Args:
        name (str):
        reference (str):
        ns (str | Unset):
        accept (str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AcrErrors | File]
    """

    kwargs = _get_kwargs(
        name=name,
        reference=reference,
        ns=ns,
        accept=accept,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    name: str,
    reference: str,
    *,
    client: AuthenticatedClient | Client,
    ns: str | Unset = UNSET,
    accept: str | Unset = UNSET,
) -> AcrErrors | File | None:
    """Download a manifest.

     Answers 200 with the manifest's bytes: a JSON document whose `Content-Type` is its media type
    (`application/vnd.oci.image.manifest.v1+json`, `application/vnd.oci.image.index.v1+json`, or a
    Docker v2 manifest or manifest list). Its digest is computed over these exact bytes, so the body is
    declared here as binary, to be kept as received rather than re-serialised.

    Args:
        name (str):
        reference (str):
        ns (str | Unset):
        accept (str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AcrErrors | File
    """

    return (
        await asyncio_detailed(
            name=name,
            reference=reference,
            client=client,
            ns=ns,
            accept=accept,
        )
    ).parsed
