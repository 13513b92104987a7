from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ...client import AuthenticatedClient, Client
from ...types import UNSET, Response, Unset


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
        "method": "head",
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
) -> Any:
    if response.status_code == 200:
        return None

    if response.status_code == 401:
        return None

    if response.status_code == 404:
        return None

    return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[Any]:
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
) -> Response[Any]:
    """Get a manifest's size, media type and digest without its body.

     Same status codes and headers as `GetManifest`, without a body: 200 when the manifest exists, 404
    with no body when it does not.

    Args:
        name (str):
        reference (str):
        ns (str | Unset):
        accept (str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Any]
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


async def asyncio_detailed(
    name: str,
    reference: str,
    *,
    client: AuthenticatedClient | Client,
    ns: str | Unset = UNSET,
    accept: str | Unset = UNSET,
) -> Response[Any]:
    """Get a manifest's size, media type and digest without its body.

     Same status codes and headers as `GetManifest`, without a body: 200 when the manifest exists, 404
    with no body when it does not.

    Args:
        name (str):
        reference (str):
        ns (str | Unset):
        accept (str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Any]
    """

    kwargs = _get_kwargs(
        name=name,
        reference=reference,
        ns=ns,
        accept=accept,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)
