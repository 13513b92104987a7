from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ...client import AuthenticatedClient, Client
from ...models.acr_errors import AcrErrors
from ...models.tag_list import TagList
from ...types import UNSET, Response, Unset


def _get_kwargs(
    name: str,
    *,
    n: int | Unset = UNSET,
    last: str | Unset = UNSET,
) -> dict[str, Any]:

    params: dict[str, Any] = {}

    params["n"] = n

    params["last"] = last

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v2/{name}/tags/list".format(
            name=quote(str(name), safe=""),
        ),
        "params": params,
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> AcrErrors | TagList:
    if response.status_code == 200:
        response_200 = TagList.from_dict(response.json())

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
) -> Response[AcrErrors | TagList]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    name: str,
    *,
    client: AuthenticatedClient | Client,
    n: int | Unset = UNSET,
    last: str | Unset = UNSET,
) -> Response[AcrErrors | TagList]:
    """List a repository's tags.

     Answers 200 with the repository's name and its tags in lexical order. With `n` the list holds at
    most that many tags, and a `Link` header with `rel="next"` names the next page.

    Args:
        name (str):
        n (int | Unset):
        last (str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AcrErrors | TagList]
    """

    kwargs = _get_kwargs(
        name=name,
        n=n,
        last=last,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    name: str,
    *,
    client: AuthenticatedClient | Client,
    n: int | Unset = UNSET,
    last: str | Unset = UNSET,
) -> AcrErrors | TagList | None:
    """List a repository's tags.

     Answers 200 with the repository's name and its tags in lexical order. With `n` the list holds at
    most that many tags, and a `Link` header with `rel="next"` names the next page.

    Args:
        name (str):
        n (int | Unset):
        last (str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AcrErrors | TagList
    """

    return sync_detailed(
        name=name,
        client=client,
        n=n,
        last=last,
    ).parsed


async def asyncio_detailed(
    name: str,
    *,
    client: AuthenticatedClient | Client,
    n: int | Unset = UNSET,
    last: str | Unset = UNSET,
) -> Response[AcrErrors | TagList]:
    """List a repository's tags.

     Answers 200 with the repository's name and its tags in lexical order. With `n` the list holds at
    most that many tags, and a `Link` header with `rel="next"` names the next page.

    Args:
        name (str):
        n (int | Unset):
        last (str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[AcrErrors | TagList]
    """

    kwargs = _get_kwargs(
        name=name,
        n=n,
        last=last,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    name: str,
    *,
    client: AuthenticatedClient | Client,
    n: int | Unset = UNSET,
    last: str | Unset = UNSET,
) -> AcrErrors | TagList | None:
    """List a repository's tags.

     Answers 200 with the repository's name and its tags in lexical order. With `n` the list holds at
    most that many tags, and a `Link` header with `rel="next"` names the next page.

    Args:
        name (str):
        n (int | Unset):
        last (str | Unset):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        AcrErrors | TagList
    """

    return (
        await asyncio_detailed(
            name=name,
            client=client,
            n=n,
            last=last,
        )
    ).parsed
