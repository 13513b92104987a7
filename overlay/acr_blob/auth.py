"""Registry authentication as an ``httpx.Auth`` flow: Basic, the Docker token protocol, ACR's
OAuth2 exchange, with one token cache per client.

The challenge decides: a 401 with ``Basic`` gets the Basic credential; a 401 with
``Bearer realm=..,service=..,scope=..`` gets a token for that (realm, service, scope), fetched
once and shared by every request, thread and task of the client until it nears expiry.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs
import httpx

from acr_blob_api.api.authentication import (
    exchange_aad_access_token_for_acr_refresh_token,
    exchange_acr_refresh_token_for_acr_access_token,
    get_acr_access_token,
)
from acr_blob_api.api.blob import get_blob
from acr_blob_api.api.manifest import get_manifest
from acr_blob_api.api.tag import list_tags
from acr_blob_api.models import (
    AcrAccessToken,
    AcrAccessTokenRequest,
    AcrApiVersion,
    AcrRefreshToken,
    AcrRefreshTokenRequest,
)
from acr_blob_api.types import UNSET, Unset

from ._protocol import is_loopback, origin, redact_url, registry_errors, request_ids
from .challenges import parse_challenges
from .credentials import (
    AccessTokenLike,
    AsyncTokenCredential,
    BasicCredential,
    RefreshTokenCredential,
    TokenCredential,
)
from .errors import AuthenticationError, InsecureCredentialError

if TYPE_CHECKING:
    import asyncio

__all__ = ["ACR_AAD_SCOPE", "RegistryAuth"]

ACR_AAD_SCOPE = "https://containerregistry.azure.net/.default"
"""The Azure AD scope of Azure Container Registry (public cloud).

Example::

    # What RegistryAuth asks an Azure AD credential for, unless given another aad_scope:
    access = DefaultAzureCredential().get_token(ACR_AAD_SCOPE)
"""
CLIENT_ID = "acr-blob"
DEFAULT_LIFETIME = 60.0
# ACR refresh tokens live about three hours; without an `exp` claim assume less.
REFRESH_TOKEN_LIFETIME = 60.0 * 60

RegistryCredential: TypeAlias = (
    BasicCredential | RefreshTokenCredential | TokenCredential | AsyncTokenCredential | None
)
TokenKey: TypeAlias = tuple[str, str, str]
"""(realm, service, scope)."""
_BASIC = "basic"
_ASYNC_CREDENTIAL_IN_SYNC_CLIENT = (
    "this Azure AD credential is asynchronous (its get_token is a coroutine function, as "
    "azure.identity.aio's are): use it with AsyncBlobClient, or give BlobClient a synchronous "
    "credential (azure.identity's)"
)


class _AadTokenWanted:
    """What a token fetch yields when it needs the Azure AD token for ACR's exchange; the
    flow gets it from the credential (the async flow awaits an async credential's) and
    sends it back in."""


_AAD_TOKEN = _AadTokenWanted()
# A token fetch yields the requests it sends (and _AAD_TOKEN); what comes back in is their
# answers (and the Azure AD token).
_Fetch: TypeAlias = Generator[httpx.Request | _AadTokenWanted, httpx.Response | str | None, str]


@attrs.define
class _Entry:
    value: str
    refresh_at: float


class _TokenCache:
    """Tokens by key, each until shortly before its expiry (monotonic clock)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._entries: dict[Any, _Entry] = {}
        self._lock = threading.Lock()

    def get(self, key: Any) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
            return entry.value if entry and self._clock() < entry.refresh_at else None

    def put(self, key: Any, value: str, lifetime: float) -> None:
        # Renew a tenth of the lifetime early (at most 30 s) so a token never expires in flight.
        margin = min(30.0, lifetime / 10)
        with self._lock:
            self._entries[key] = _Entry(value, self._clock() + max(lifetime - margin, 0.0))

    def drop(self, key: Any, value: str) -> None:
        with self._lock:
            if (entry := self._entries.get(key)) and entry.value == value:
                del self._entries[key]


def _jwt_lifetime(token: str) -> float | None:
    """Seconds until the JWT's ``exp``, read without verifying (the server verifies)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"]) - time.time()
    except (IndexError, ValueError, KeyError, TypeError, binascii.Error):
        return None


def _path_shape(url: str, name: str) -> tuple[str, str]:
    """What comes before the repository ``name`` in a built path, and the segment after it:
    ``/v2/NAME/blobs/DIGEST`` -> ``("/v2/", "/blobs/")``."""
    before, found, after = url.partition(name)
    assert found and after.startswith("/"), url
    return before, after[: after.index("/", 1) + 1]


# The paths whose repository a registry scopes tokens to, taken once from the spec's builders.
_NAME = "repository-name"
_SHAPES = [
    _path_shape(get_blob._get_kwargs(name=_NAME, digest="sha256:0")["url"], _NAME),
    _path_shape(get_manifest._get_kwargs(name=_NAME, reference="latest")["url"], _NAME),
    _path_shape(list_tags._get_kwargs(name=_NAME)["url"], _NAME),
]
_V2_PREFIX = _SHAPES[0][0]
assert all(prefix == _V2_PREFIX for prefix, _ in _SHAPES), _SHAPES
_REPOSITORY_MARKERS = tuple(marker for _, marker in _SHAPES)
# ACR's exchange of an AAD token, on the token server's origin.
_EXCHANGE_PATH: str = exchange_aad_access_token_for_acr_refresh_token._get_kwargs(
    body=AcrRefreshTokenRequest(grant_type="access_token", service="")
)["url"]
# ACR's own token endpoint. Docker token servers take the same OAuth2 form at other paths
# (`/token`, `/service/token`) and have no API versions: a realm at this path is ACR's.
_ACR_TOKEN_PATH: str = exchange_acr_refresh_token_for_acr_access_token._get_kwargs(
    body=AcrAccessTokenRequest(grant_type="refresh_token", service="", scope="")
)["url"]
# What every Azure SDK sends to ACR's /oauth2/exchange and /oauth2/token.
_API_VERSION = AcrApiVersion.V2021_07_01


def _repository(request: httpx.Request) -> str:
    """``/v2/<name>/blobs/...`` -> ``<name>``: the unit a registry grants tokens for."""
    path = request.url.path
    if path.startswith(_V2_PREFIX):
        for marker in _REPOSITORY_MARKERS:
            if marker in path:
                return path[len(_V2_PREFIX) : path.index(marker)]
    return ""


class RegistryAuth(httpx.Auth):
    """Answers registry challenges with ``credential``; pass it as a client's ``credential``.

    ``credential`` is ``None`` (anonymous: tokens for public pulls), a :class:`BasicCredential`
    (Basic, or the token server's Basic login), a :class:`RefreshTokenCredential` (OAuth2
    ``grant_type=refresh_token``), or an Azure AD credential with ``get_token(*scopes)``
    (exchanged at ``/oauth2/exchange`` for an ACR refresh token; an ``async def get_token``
    only in an async client, which awaits it). With ``oauth2_password`` a Basic credential is
    sent as the OAuth2 ``grant_type=password`` form instead. ``allow_insecure`` permits
    credentials to a token server on plain http beyond loopback.

    Its repr names the kind of credential, never the secret:
    ``RegistryAuth(BasicCredential)``.

    Example::

        auth = RegistryAuth(BasicCredential("user", "password"), oauth2_password=True)
        client = BlobClient("registry.example.com", auth)
    """

    def __init__(
        self,
        credential: RegistryCredential = None,
        *,
        allow_insecure: bool = False,
        oauth2_password: bool = False,
        aad_scope: str = ACR_AAD_SCOPE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.credential = credential
        self._allow_insecure = allow_insecure
        self._oauth2_password = oauth2_password
        self._aad_scope = aad_scope
        self._tokens = _TokenCache(clock)
        self._refresh_tokens = _TokenCache(clock)
        self._token_keys: dict[tuple[Any, str], TokenKey] = {}
        self._basic_origins: set[Any] = set()
        self._guard = threading.Lock()
        self._thread_locks: dict[TokenKey, threading.Lock] = {}
        self._task_locks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[TokenKey, asyncio.Lock]
        ] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"RegistryAuth({type(self.credential).__name__})"

    # The two flows differ only in how they lock, read and get an Azure AD token; the
    # decisions are shared below.

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        if _is_async_credential(self.credential):
            raise TypeError(_ASYNC_CREDENTIAL_IN_SYNC_CLIENT)  # before any request is sent
        sent = self._authorize(request)
        response = yield request
        action = self._answer(request, response, sent)
        if action is None:
            return
        if isinstance(action, tuple):
            key = action
            with self._thread_lock(key):
                token = self._tokens.get(key)
                if token is None or token == sent:
                    fetch = self._fetch(key, request.headers.get("User-Agent"))
                    reply: httpx.Response | str | None = None
                    try:
                        while True:
                            step = fetch.send(reply)
                            if isinstance(step, httpx.Request):
                                reply = yield step
                                reply.read()
                            else:
                                reply = self._aad_token()
                    except StopIteration as done:
                        token = done.value
            self._bearer(request, token)
        yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        sent = self._authorize(request)
        response = yield request
        action = self._answer(request, response, sent)
        if action is None:
            return
        if isinstance(action, tuple):
            key = action
            async with self._task_lock(key):
                token = self._tokens.get(key)
                if token is None or token == sent:
                    fetch = self._fetch(key, request.headers.get("User-Agent"))
                    reply: httpx.Response | str | None = None
                    try:
                        while True:
                            step = fetch.send(reply)
                            if isinstance(step, httpx.Request):
                                reply = yield step
                                await reply.aread()
                            else:
                                reply = await self._async_aad_token()
                    except StopIteration as done:
                        token = done.value
            self._bearer(request, token)
        yield request

    def _aad_access(self) -> AccessTokenLike | Awaitable[AccessTokenLike]:
        assert isinstance(self.credential, TokenCredential | AsyncTokenCredential)
        return self.credential.get_token(self._aad_scope)

    def _aad_token(self) -> str:
        """The Azure AD token, from a synchronous credential."""
        access = self._aad_access()
        if inspect.isawaitable(access):
            # A get_token that is no coroutine function but returns an awaitable all the same.
            if inspect.iscoroutine(access):
                access.close()  # never awaited, and never to be: no warning about it
            raise TypeError(_ASYNC_CREDENTIAL_IN_SYNC_CLIENT)
        return access.token

    async def _async_aad_token(self) -> str:
        """The Azure AD token, from a synchronous or an asynchronous credential."""
        access = self._aad_access()
        if inspect.isawaitable(access):
            access = await access
        return access.token

    def _thread_lock(self, key: TokenKey) -> threading.Lock:
        with self._guard:
            return self._thread_locks.setdefault(key, threading.Lock())

    def _task_lock(self, key: TokenKey) -> asyncio.Lock:
        # Imported here, where an async flow needs it, so that sync users never load asyncio.
        import asyncio

        # asyncio locks belong to one event loop; a client may be used from several in turn.
        with self._guard:
            locks = self._task_locks.setdefault(asyncio.get_running_loop(), {})
            return locks.setdefault(key, asyncio.Lock())

    def _authorize(self, request: httpx.Request) -> str | None:
        """Apply what earlier challenges taught for this origin and repository, if anything."""
        where = origin(request.url)
        if where in self._basic_origins and isinstance(self.credential, BasicCredential):
            self._basic(request)
            return _BASIC
        key = self._token_keys.get((where, _repository(request)))
        token = self._tokens.get(key) if key else None
        if token:
            self._bearer(request, token)
        return token

    def _answer(
        self, request: httpx.Request, response: httpx.Response, sent: str | None
    ) -> TokenKey | str | None:
        """What to do about a response: nothing, Basic, or a token for a key."""
        if response.status_code != 401:
            return None
        challenges = parse_challenges(response.headers.get_list("WWW-Authenticate"))
        bearer = next((c for c in challenges if c.scheme == "bearer" and c.get("realm")), None)
        if bearer is not None:
            realm = bearer.get("realm") or ""
            key = (realm, bearer.get("service") or "", bearer.get("scope") or "")
            self._check_realm(realm)
            if bearer.get("error") == "invalid_token" and sent and sent != _BASIC:
                self._tokens.drop(key, sent)
            self._token_keys[(origin(request.url), _repository(request))] = key
            return key
        if (
            any(c.scheme == "basic" for c in challenges)
            and sent != _BASIC
            and isinstance(self.credential, BasicCredential)
        ):
            self._basic_origins.add(origin(request.url))
            self._basic(request)
            return _BASIC
        return None

    def _check_realm(self, realm: str) -> None:
        url = httpx.URL(realm)
        if url.scheme not in ("http", "https"):
            raise AuthenticationError(401, excerpt=f"token realm is not an http(s) URL: {realm!r}")
        if (
            url.scheme == "http"
            and self.credential is not None
            and not is_loopback(url.host)
            and not self._allow_insecure
        ):
            raise InsecureCredentialError(
                f"refusing to send credentials to the token server {redact_url(url)} over plain "
                "http; use https or pass allow_insecure=True"
            )

    def _basic(self, request: httpx.Request) -> None:
        assert isinstance(self.credential, BasicCredential)
        _apply_basic(request, self.credential)

    @staticmethod
    def _bearer(request: httpx.Request, token: str) -> None:
        request.headers["Authorization"] = f"Bearer {token}"

    def _fetch(self, key: TokenKey, user_agent: str | None) -> _Fetch:
        """Yield the token requests for ``key`` (each answer sent back in), return the token;
        for an Azure AD credential, first yield ``_AAD_TOKEN`` for its token (see
        :meth:`_acr_refresh_token`).

        Token requests are the flow's own, so they lack the client's default headers: they
        get the ``User-Agent`` of the request that was challenged.
        """
        realm, service, scope = key
        credential = self.credential
        api_version: AcrApiVersion | Unset = (
            _API_VERSION if httpx.URL(realm).path == _ACR_TOKEN_PATH else UNSET
        )
        if isinstance(credential, TokenCredential | AsyncTokenCredential):
            refresh_token = yield from self._acr_refresh_token(realm, service, scope, user_agent)
            kwargs = exchange_acr_refresh_token_for_acr_access_token._get_kwargs(
                body=_form("refresh_token", service, scope, refresh_token=refresh_token),
                api_version=api_version,
            )
        elif isinstance(credential, RefreshTokenCredential):
            kwargs = exchange_acr_refresh_token_for_acr_access_token._get_kwargs(
                body=_form("refresh_token", service, scope, refresh_token=credential.refresh_token),
                api_version=api_version,
            )
        elif isinstance(credential, BasicCredential) and self._oauth2_password:
            kwargs = exchange_acr_refresh_token_for_acr_access_token._get_kwargs(
                body=_form(
                    "password",
                    service,
                    scope,
                    username=credential.username,
                    password=credential.password,
                ),
                api_version=api_version,
            )
        else:
            kwargs = get_acr_access_token._get_kwargs(service=service, scope=scope)
        kwargs["url"] = realm  # the challenge names the token endpoint
        request = _token_request(kwargs, user_agent)
        if isinstance(credential, BasicCredential) and not self._oauth2_password:
            _apply_basic(request, credential)
        response = yield request
        assert isinstance(response, httpx.Response)
        answer = AcrAccessToken.from_dict(_json(response, scope))
        token = next(
            (t for t in (answer.access_token, answer.token) if isinstance(t, str) and t), None
        )
        if token is None:
            raise AuthenticationError(
                response.status_code,
                excerpt="the token server's answer has no token",
                url=redact_url(response.request.url),
                scope=scope,
                **request_ids(response),
            )
        self._tokens.put(key, token, _lifetime(answer, token))
        return token

    def _acr_refresh_token(
        self, realm: str, service: str, scope: str, user_agent: str | None
    ) -> _Fetch:
        """An ACR refresh token for this registry, cached, else exchanged for the Azure AD
        token (yielding ``_AAD_TOKEN`` for it: a sync flow cannot await a credential, an async
        flow must)."""
        where = httpx.URL(realm).copy_with(path=_EXCHANGE_PATH, query=None)
        cache_key = (str(where), service)
        cached = self._refresh_tokens.get(cache_key)
        if cached:
            return cached
        aad_token = yield _AAD_TOKEN
        assert isinstance(aad_token, str)
        kwargs = exchange_aad_access_token_for_acr_refresh_token._get_kwargs(
            body=AcrRefreshTokenRequest(
                grant_type="access_token", service=service, access_token=aad_token
            ),
            api_version=_API_VERSION,
        )
        kwargs["url"] = str(where)
        response = yield _token_request(kwargs, user_agent)
        assert isinstance(response, httpx.Response)
        refresh_token = AcrRefreshToken.from_dict(_json(response, scope)).refresh_token
        if not isinstance(refresh_token, str) or not refresh_token:
            raise AuthenticationError(
                response.status_code,
                excerpt="the exchange answered no refresh token",
                url=redact_url(response.request.url),
                scope=scope,
                **request_ids(response),
            )
        lifetime = _jwt_lifetime(refresh_token) or REFRESH_TOKEN_LIFETIME
        self._refresh_tokens.put(cache_key, refresh_token, lifetime)
        return refresh_token


def _is_async_credential(credential: object) -> bool:
    """Whether ``credential`` has azure-core's AsyncTokenCredential shape (``async def
    get_token``), which only an async flow can use."""
    return inspect.iscoroutinefunction(getattr(credential, "get_token", None))


def _token_request(kwargs: dict[str, Any], user_agent: str | None) -> httpx.Request:
    """The request of a generated builder's ``kwargs``, with the client's ``User-Agent``."""
    request = httpx.Request(**kwargs)
    if user_agent is not None:
        request.headers["User-Agent"] = user_agent
    return request


def _apply_basic(request: httpx.Request, credential: BasicCredential) -> None:
    """Basic credentials on ``request``, set by httpx's own Basic flow."""
    next(httpx.BasicAuth(credential.username, credential.password).auth_flow(request))


def _form(grant_type: str, service: str, scope: str, **fields: str) -> AcrAccessTokenRequest:
    return AcrAccessTokenRequest(
        grant_type=grant_type, service=service, scope=scope, client_id=CLIENT_ID, **fields
    )


def _json(response: httpx.Response, scope: str) -> dict[str, Any]:
    """The token server's JSON answer, or the AuthenticationError its refusal means."""
    url = redact_url(response.request.url)
    if response.status_code != 200:
        raise AuthenticationError(
            response.status_code,
            registry_errors(response.content),
            url=url,
            scope=scope,
            **request_ids(response),
        )
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise AuthenticationError(
            response.status_code,
            excerpt="the token server's answer is not JSON",
            url=url,
            scope=scope,
            **request_ids(response),
        )
    return document


def _lifetime(answer: AcrAccessToken, token: str) -> float:
    """Seconds the token stays valid: expires_in, else the JWT's exp, else 60."""
    lifetime: float | None = None
    if isinstance(answer.expires_in, int) and answer.expires_in > 0:
        lifetime = float(answer.expires_in)
        if isinstance(answer.issued_at, str):
            from dateutil.parser import isoparse  # here: dateutil costs start-up time

            try:
                age = time.time() - isoparse(answer.issued_at).timestamp()
            except (ValueError, OverflowError):
                age = 0.0
            # A token issued a while ago (a slow answer, or a token server's cache) has less left.
            lifetime -= min(max(age, 0.0), lifetime)
    if lifetime is None:
        lifetime = _jwt_lifetime(token)
    return lifetime if lifetime is not None and lifetime > 0 else DEFAULT_LIFETIME
