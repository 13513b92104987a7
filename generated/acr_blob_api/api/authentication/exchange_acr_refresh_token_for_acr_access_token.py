from http import HTTPStatus
from typing import Any

import httpx

from ...client import AuthenticatedClient, Client
from ...models.acr_access_token import AcrAccessToken
from ...models.acr_access_token_request import AcrAccessTokenRequest
from ...models.acr_errors import AcrErrors
from ...types import Response


def _get_kwargs(
    *,
    body: AcrAccessTokenRequest,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/oauth2/token",
    }

    _kwargs["data"] = body.to_dict()
    headers["Content-Type"] = "application/x-www-form-urlencoded"

    _kwargs["headers"] = headers
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
    body: AcrAccessTokenRequest,
) -> Response[AcrAccessToken | AcrErrors]:
    """Exchange a refresh token (or a password) for an access token (OAuth2 form).

    Args:
        body (AcrAccessTokenRequest): The OAuth2 form of `POST /oauth2/token` (and of Docker token
            servers).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AcrAccessToken | AcrErrors]
    """

    kwargs = _get_kwargs(
        body=body,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient | Client,
    body: AcrAccessTokenRequest,
) -> AcrAccessToken | AcrErrors | None:
    """Exchange a refresh token (or a password) for an access token (OAuth2 form).

    Args:
        body (AcrAccessTokenRequest): The OAuth2 form of `POST /oauth2/token` (and of Docker token
            servers).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AcrAccessToken | AcrErrors
    """

    return sync_detailed(
        client=client,
        body=body,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient | Client,
    body: AcrAccessTokenRequest,
) -> Response[AcrAccessToken | AcrErrors]:
    """Exchange a refresh token (or a password) for an access token (OAuth2 form).

    Args:
        body (AcrAccessTokenRequest): The OAuth2 form of `POST /oauth2/token` (and of Docker token
            servers).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AcrAccessToken | AcrErrors]
    """

    kwargs = _get_kwargs(
        body=body,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient | Client,
    body: AcrAccessTokenRequest,
) -> AcrAccessToken | AcrErrors | None:
    """Exchange a refresh token (or a password) for an access token (OAuth2 form).

    Args:
        body (AcrAccessTokenRequest): The OAuth2 form of `POST /oauth2/token` (and of Docker token
            servers).

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AcrAccessToken | AcrErrors
    """

    return (
        await asyncio_detailed(
            client=client,
            body=body,
        )
    ).parsed
