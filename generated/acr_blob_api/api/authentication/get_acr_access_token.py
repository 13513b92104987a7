from http import HTTPStatus
from typing import Any

import httpx

from ...client import AuthenticatedClient, Client
from ...models.acr_access_token import AcrAccessToken
from ...models.acr_errors import AcrErrors
from ...types import UNSET, Response


def _get_kwargs(
    *,
    service: str,
    scope: str,
) -> dict[str, Any]:

    params: dict[str, Any] = {}

    params["service"] = service

    params["scope"] = scope

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/oauth2/token",
        "params": params,
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> AcrAccessToken | AcrErrors:
    if response.status_code == 200:
        response_200 = AcrAccessToken.from_dict(response.json())

        return response_200

    response_default = AcrErrors.from_dict(response.json())

    return response_default


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[AcrAccessToken | AcrErrors]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient | Client,
    service: str,
    scope: str,
) -> Response[AcrAccessToken | AcrErrors]:
    """Get an access token for a scope (Docker token protocol; anonymous or Basic).

     The Docker token protocol's `GET {realm}?service=..&scope=..`, which ACR serves at `/oauth2/token`.
    Without credentials it grants what anonymous pull allows.

    Args:
        service (str):
        scope (str):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AcrAccessToken | AcrErrors]
    """

    kwargs = _get_kwargs(
        service=service,
        scope=scope,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient | Client,
    service: str,
    scope: str,
) -> AcrAccessToken | AcrErrors | None:
    """Get an access token for a scope (Docker token protocol; anonymous or Basic).

     The Docker token protocol's `GET {realm}?service=..&scope=..`, which ACR serves at `/oauth2/token`.
    Without credentials it grants what anonymous pull allows.

    Args:
        service (str):
        scope (str):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AcrAccessToken | AcrErrors
    """

    return sync_detailed(
        client=client,
        service=service,
        scope=scope,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient | Client,
    service: str,
    scope: str,
) -> Response[AcrAccessToken | AcrErrors]:
    """Get an access token for a scope (Docker token protocol; anonymous or Basic).

     The Docker token protocol's `GET {realm}?service=..&scope=..`, which ACR serves at `/oauth2/token`.
    Without credentials it grants what anonymous pull allows.

    Args:
        service (str):
        scope (str):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AcrAccessToken | AcrErrors]
    """

    kwargs = _get_kwargs(
        service=service,
        scope=scope,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient | Client,
    service: str,
    scope: str,
) -> AcrAccessToken | AcrErrors | None:
    """Get an access token for a scope (Docker token protocol; anonymous or Basic).

     The Docker token protocol's `GET {realm}?service=..&scope=..`, which ACR serves at `/oauth2/token`.
    Without credentials it grants what anonymous pull allows.

    Args:
        service (str):
        scope (str):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AcrAccessToken | AcrErrors
    """

    return (
        await asyncio_detailed(
            client=client,
            service=service,
            scope=scope,
        )
    ).parsed
