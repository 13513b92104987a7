"""The kinds of credential a registry client can hold.

``BlobClient(credential=...)`` takes ``None`` (anonymous), a ``(username, password)`` tuple (the
same as :class:`BasicCredential`), a :class:`BasicCredential`, a :class:`RefreshTokenCredential`
(a Docker "identity token" or an ACR refresh token), or any object with the azure-core
``get_token(*scopes)`` shape (an Azure AD credential, exchanged for ACR tokens).
``AsyncBlobClient`` also takes azure-core's async shape, ``async def get_token(*scopes)``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import attrs

__all__ = [
    "AccessTokenLike",
    "AsyncTokenCredential",
    "BasicCredential",
    "RefreshTokenCredential",
    "TokenCredential",
]


@attrs.frozen(repr=False)
class BasicCredential:
    """A user name and password (or ACR token name and password).

    Example::

        BlobClient("myregistry.azurecr.io", BasicCredential("user", "password"))
    """

    username: str
    password: str

    def __repr__(self) -> str:
        return f"BasicCredential(username={self.username!r}, password=<redacted>)"


@attrs.frozen(repr=False)
class RefreshTokenCredential:
    """An OAuth2 refresh token: Docker's ``identitytoken``, or an ACR refresh token.

    It is sent to the token server (``POST``, ``grant_type=refresh_token``), never to the registry.
    Its repr hides the token.

    Example::

        credential = RefreshTokenCredential(refresh_token)
        with BlobClient("myregistry.azurecr.io", credential) as client:
            client.download_blob_to_file("prod/bash", digest, "layer.tar.gz")
        print(credential)  # RefreshTokenCredential(<redacted>)
    """

    refresh_token: str

    def __repr__(self) -> str:
        return "RefreshTokenCredential(<redacted>)"


class AccessTokenLike(Protocol):
    """What azure-core's ``get_token`` returns: ``token`` and ``expires_on`` (Unix seconds).

    Example::

        access = credential.get_token("https://containerregistry.azure.net/.default")
        print(access.expires_on)  # the token itself stays out of logs
    """

    @property
    def token(self) -> str: ...

    @property
    def expires_on(self) -> int: ...


@runtime_checkable
class TokenCredential(Protocol):
    """The azure-core credential shape (``azure.identity.DefaultAzureCredential`` and friends).

    No Azure package is needed by acr-blob: any object with ``get_token(*scopes)`` returning an
    object with ``token`` and ``expires_on`` will do. Its token is exchanged for an ACR refresh
    token (``POST /oauth2/exchange``), then for access tokens (``POST /oauth2/token``).
    Both clients take it; ``AsyncBlobClient`` also takes an :class:`AsyncTokenCredential`.

    Example::

        from azure.identity import DefaultAzureCredential

        with BlobClient("myregistry.azurecr.io", DefaultAzureCredential()) as client:
            client.download_blob_to_file("prod/bash", digest, "layer.tar.gz")
    """

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessTokenLike: ...


@runtime_checkable
class AsyncTokenCredential(Protocol):
    """The azure-core async credential shape (``azure.identity.aio.DefaultAzureCredential``
    and friends): ``async def get_token(*scopes)``, for :class:`~acr_blob.AsyncBlobClient`.

    It is used as a :class:`TokenCredential` is, its ``get_token`` awaited. ``BlobClient``
    cannot await it: given one, its first request raises ``TypeError`` before anything is
    sent. Closing the credential stays its owner's job, as with azure-identity's.

    Example::

        from azure.identity.aio import DefaultAzureCredential

        async with DefaultAzureCredential() as credential:
            async with AsyncBlobClient("myregistry.azurecr.io", credential) as client:
                await client.download_blob_to_file("prod/bash", digest, "layer.tar.gz")
    """

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessTokenLike: ...
