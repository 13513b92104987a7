from http import HTTPStatus
from typing import Any

import httpx

from ...client import AuthenticatedClient, Client
from ...models.acr_api_version import AcrApiVersion
from ...models.acr_errors import AcrErrors
from ...models.acr_refresh_token import AcrRefreshToken
from ...models.acr_refresh_token_request import AcrRefreshTokenRequest
from ...types import UNSET, Response, Unset


def _get_kwargs(
    *,
    body: AcrRefreshTokenRequest,
    api_version: AcrApiVersion | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}

    params: dict[str, Any] = {}

    json_api_version: str | Unset = UNSET
    if not isinstance(api_version, Unset):
        json_api_version = api_version.value

    params["api-version"] = json_api_version

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/oauth2/exchange",
        "params": params,
    }

    _kwargs["data"] = body.to_dict()
    headers["Content-Type"] = "application/x-www-form-urlencoded"

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> AcrErrors | AcrRefreshToken:
    if response.status_code == 200:
        response_200 = AcrRefreshToken.from_dict(response.json())

        return response_200

    response_default = AcrErrors.from_dict(response.json())

    return response_default


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[AcrErrors | AcrRefreshToken]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient | Client,
    body: AcrRefreshTokenRequest,
    api_version: AcrApiVersion | Unset = UNSET,
) -> Response[AcrErrors | AcrRefreshToken]:
    """Exchange an Azure AD access token for an ACR refresh token.

    Args:
        api_version (AcrApiVersion | Unset): ACR's OAuth2 API version.
        body (AcrRefreshTokenRequest): The form of `POST /oauth2/exchange`.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AcrErrors | AcrRefreshToken]
    """

    kwargs = _get_kwargs(
        body=body,
        api_version=api_version,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient | Client,
    body: AcrRefreshTokenRequest,
    api_version: AcrApiVersion | Unset = UNSET,
) -> AcrErrors | AcrRefreshToken | None:
    """Exchange an Azure AD access token for an ACR refresh token.

    Args:
        api_version (AcrApiVersion | Unset): ACR's OAuth2 API version.
        body (AcrRefreshTokenRequest): The form of `POST /oauth2/exchange`.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AcrErrors | AcrRefreshToken
    """

    return sync_detailed(
        client=client,
        body=body,
        api_version=api_version,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient | Client,
    body: AcrRefreshTokenRequest,
    api_version: AcrApiVersion | Unset = UNSET,
) -> Response[AcrErrors | AcrRefreshToken]:
    """Exchange an Azure AD access token for an ACR refresh token.

    Args:
        api_version (AcrApiVersion | Unset): ACR's OAuth2 API version.
        body (AcrRefreshTokenRequest): The form of `POST /oauth2/exchange`.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AcrErrors | AcrRefreshToken]
    """

    kwargs = _get_kwargs(
        body=body,
        api_version=api_version,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient | Client,
    body: AcrRefreshTokenRequest,
    api_version: AcrApiVersion | Unset = UNSET,
) -> AcrErrors | AcrRefreshToken | None:
    """Exchange an Azure AD access token for an ACR refresh token.

    Args:
        api_version (AcrApiVersion | Unset): ACR's OAuth2 API version.
        body (AcrRefreshTokenRequest): The form of `POST /oauth2/exchange`.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AcrErrors | AcrRefreshToken
    """

    return (
        await asyncio_detailed(
            client=client,
            body=body,
            api_version=api_version,
        )
    ).parsed
