"""Stand-ins for an Azure AD credential (azure-identity's), for registries that exchange AAD tokens.

They have azure-core's TokenCredential shape, `get_token(*scopes, **kwargs)` returning an
AccessToken `(token, expires_on)`, so acr-blob, azure-containerregistry and anything else
built on azure-core take them; the async one has AsyncTokenCredential's (`async get_token`,
`async close`). They hand out a fixed `token` (change it to hand out another, e.g. one the
registry no longer accepts) and record every call (`calls`, `scopes`).

    credential = FakeAADCredential(deployment.aad_token)
    ...
    assert credential.scopes == ["https://containerregistry.azure.net/.default"]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, Self


class AccessToken(NamedTuple):
    """azure-core's AccessToken, field for field: the token and its expiry (Unix seconds)."""

    token: str
    expires_on: int


@dataclass(frozen=True)
class TokenCall:
    """One `get_token` call: the scopes asked for and the keyword arguments that came along."""

    scopes: tuple[str, ...]
    claims: str | None
    tenant_id: str | None
    enable_cae: bool
    kwargs: Mapping[str, Any]


class _Recorder:
    def __init__(self, token: str, lifetime: int, clock: Callable[[], float]) -> None:
        self.token = token
        self.lifetime = lifetime
        self._clock = clock
        self._lock = threading.Lock()
        self._calls: list[TokenCall] = []
        self.closed = False

    @property
    def calls(self) -> list[TokenCall]:
        with self._lock:
            return list(self._calls)

    @property
    def scopes(self) -> list[str]:
        """Every scope asked for, call after call."""
        return [scope for call in self.calls for scope in call.scopes]

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()

    def _issue(
        self,
        scopes: tuple[str, ...],
        claims: str | None,
        tenant_id: str | None,
        enable_cae: bool,
        kwargs: Mapping[str, Any],
    ) -> AccessToken:
        if not scopes:
            # azure-identity's credentials refuse a call without a scope the same way.
            raise ValueError("get_token requires at least one scope")
        with self._lock:
            self._calls.append(TokenCall(scopes, claims, tenant_id, enable_cae, dict(kwargs)))
        return AccessToken(self.token, int(self._clock()) + self.lifetime)


class FakeAADCredential(_Recorder):
    """A synchronous AAD credential that hands out `token`, valid for `lifetime` seconds."""

    def __init__(
        self, token: str, *, lifetime: int = 3600, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(token, lifetime, clock)

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return self._issue(scopes, claims, tenant_id, enable_cae, kwargs)

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FakeAADCredential(<token redacted>, calls={len(self.calls)})"


class AsyncFakeAADCredential(_Recorder):
    """The asynchronous twin of FakeAADCredential (azure-core's AsyncTokenCredential shape)."""

    def __init__(
        self, token: str, *, lifetime: int = 3600, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(token, lifetime, clock)

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return self._issue(scopes, claims, tenant_id, enable_cae, kwargs)

    async def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncFakeAADCredential(<token redacted>, calls={len(self.calls)})"
