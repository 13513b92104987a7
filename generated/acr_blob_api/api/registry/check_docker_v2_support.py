from http import HTTPStatus
from typing import Any, cast

import httpx

from ...client import AuthenticatedClient, Client
from ...models.acr_errors import AcrErrors
from ...types import Response


def _get_kwargs() -> dict[str, Any]:

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v2/",
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> AcrErrors | Any:
    if response.status_code == 200:
        response_200 = cast(Any, None)
        return response_200

    if response.status_code == 401:
        response_401 = AcrErrors.from_dict(response.json())

        return response_401

    response_default = AcrErrors.from_dict(response.json())

    return response_default


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[AcrErrors | Any]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient | Client,
) -> Response[AcrErrors | Any]:
    """Check that the registry speaks the Docker Registry HTTP API V2.

     Answers 200 when the registry implements the V2 API and the caller may use it; 401 with a `WWW-
    Authenticate` challenge when credentials are needed.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AcrErrors | Any]
    """

    kwargs = _get_kwargs()

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient | Client,
) -> AcrErrors | Any | None:
    """Check that the registry speaks the Docker Registry HTTP API V2.

     Answers 200 when the registry implements the V2 API and the caller may use it; 401 with a `WWW-
    Authenticate` challenge when credentials are needed.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AcrErrors | Any
    """

    return sync_detailed(
        client=client,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient | Client,
) -> Response[AcrErrors | Any]:
    """Check that the registry speaks the Docker Registry HTTP API V2.

     Answers 200 when the registry implements the V2 API and the caller may use it; 401 with a `WWW-
    Authenticate` challenge when credentials are needed.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AcrErrors | Any]
    """

    kwargs = _get_kwargs()

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient | Client,
) -> AcrErrors | Any | None:
    """Check that the registry speaks the Docker Registry HTTP API V2.

     Answers 200 when the registry implements the V2 API and the caller may use it; 401 with a `WWW-
    Authenticate` challenge when credentials are needed.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AcrErrors | Any
    """

    return (
        await asyncio_detailed(
            client=client,
        )
    ).parsed
