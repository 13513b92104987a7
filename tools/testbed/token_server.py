"""A token server for registries in token-auth mode: Docker's token protocol and ACR's OAuth2.

Endpoints (all answers JSON; every error is `{"errors":[{"code":..., "message":...}]}`):
  GET  /token           Docker token protocol; optional Basic credentials; answers `token`
                        and/or `access_token` (see `token_field`), `expires_in`, `issued_at`
  POST /token           Docker's OAuth2 form, grant_type `password` or `refresh_token`; answers
                        `access_token`, `expires_in`, `issued_at`, `scope` (+ `refresh_token`
                        for the password grant)
  GET  /oauth2/token    ACR's anonymous (or Basic) token: `{"access_token": JWT}` only
  POST /oauth2/token    ACR's form, grant_type `refresh_token` or `password`:
                        `{"access_token": JWT}` only (ACR clients read `exp` from the JWT)
  POST /oauth2/exchange ACR's AAD-token exchange: `{"refresh_token": JWT-shaped string}`

A `service` other than the server's is refused (400); only GET /token may leave it out.

Access tokens are ES256 JWTs that distribution 2.8 accepts: signed with the key of a
self-signed P-256 certificate (`cert_path`, for the registry's `rootcertbundle`) that also
rides in the header's `x5c`. Repositories matching a `public_repositories` pattern give pull
to anyone; the others give pull to any authenticated caller; the admin user gets pull, push
and delete everywhere. Nothing else is ever granted, whatever the scope asks.

The registry accepts a token up to 60 s after its `exp` (distribution's clock-skew leeway):
to have it refuse a token as expired, backdate it with `jwt_lifetime` (e.g. -120).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import fnmatch
import json
import secrets
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Collection, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, Self, cast
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tools.testbed.process import Service, free_port

TokenField = Literal["both", "token", "access_token"]

# The testbed's own traffic (pushes through the admin user) carries this User-Agent; it is
# logged with `testbed=True` and left out of `requests` and `count()`, so that a test counts
# only what its client sent even though its blobs were pushed after the per-test reset.
TESTBED_USER_AGENT = "acr-blob-testbed"

_ADMIN_ACTIONS = ("pull", "push", "delete")
_MAX_FORM = 1 << 20


@dataclass(frozen=True)
class TokenRequest:
    """One request as the token server saw it and what it answered.

    `params` holds the query and (for a POST) the form fields, query first, passwords and
    tokens included as sent: it is a test's log, not a production one. `query` is the query
    string's alone (where a client put a parameter), `headers` the request's headers as sent.
    `basic_user` is the user name of a Basic `Authorization` header, right password or not;
    `user` is who the request authenticated as by any means (Basic, password grant, refresh or
    AAD token).
    """

    method: str
    path: str
    params: Mapping[str, tuple[str, ...]]
    basic_present: bool
    basic_user: str | None
    user: str | None
    status: int
    testbed: bool
    query: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        values = self.params.get(name)
        return values[0] if values else None

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)

    @property
    def scopes(self) -> list[str]:
        return _scopes(self.params)

    @property
    def grant_type(self) -> str | None:
        return self.param("grant_type")


@dataclass(frozen=True)
class _Answer:
    status: int
    body: dict[str, Any]
    user: str | None = None


@dataclass
class _RefreshToken:
    user: str
    expires_at: float


@dataclass
class _Failure:
    status: int
    body: bytes
    path: str | None
    remaining: int | None


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.answer = _Answer(status, _errors(code, message))


def _errors(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message}]}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json_b64(value: object) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def decode_jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified: for tests that look at what was granted."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def decode_jwt_header(token: str) -> dict[str, Any]:
    header = token.split(".")[0]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
    )
    return decoded


def parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """`repository:NAME:pull,push` -> ("repository", NAME, ["pull", "push"]).

    The name is everything between the first and the last colon, so a name with a port in it
    (`repository:host:5000/x:pull`) survives.
    """
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name:
        return None
    return kind, name, [a for a in actions.split(",") if a]


def _rfc3339(moment: float) -> str:
    stamp = datetime.datetime.fromtimestamp(moment, datetime.UTC)
    return stamp.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _make_signing_cert(directory: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acr-blob testbed token signer")])
    now = datetime.datetime.now(datetime.UTC)
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        # The registry verifies x5c as a chain ending in its rootcertbundle; being a CA keeps
        # the self-signed certificate acceptable as its own root.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    (directory / "token.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = directory / "token.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return key, cert


class TokenServer(Service):
    """The token server, in a background thread on `host`:free port, with a request log.

    Settings a test may change at run time (`reset()` restores the constructor's values):
    `expires_in`, `omit_expires_in`, `token_field`, `jwt_lifetime` (seconds from now to the
    JWT's `exp`; None: `expires_in`), `refresh_token_lifetime`.
    """

    def __init__(
        self,
        *,
        service: str = "test-registry",
        issuer: str = "test-issuer",
        users: Mapping[str, str] | None = None,
        admin: tuple[str, str] | None = None,
        public_repositories: Iterable[str] = (),
        aad_tokens: Mapping[str, str] | None = None,
        tenant: str | None = None,
        expires_in: int = 300,
        omit_expires_in: bool = False,
        token_field: TokenField = "both",
        jwt_lifetime: int | None = None,
        refresh_token_lifetime: int = 3 * 3600,
        host: str = "127.0.0.1",
    ) -> None:
        self.service = service
        self.issuer = issuer
        # The admin's password is random unless given: only the testbed's pushes need it.
        self.admin = admin or ("admin", secrets.token_urlsafe(12))
        self.users: dict[str, str] = {**(users or {}), self.admin[0]: self.admin[1]}
        # fnmatch patterns: "public/*" covers every repository under public/.
        self.public_repositories = frozenset(public_repositories)
        self.aad_tokens = dict(aad_tokens or {})
        self.tenant = tenant
        self._defaults = (
            expires_in,
            omit_expires_in,
            token_field,
            jwt_lifetime,
            refresh_token_lifetime,
        )
        self.expires_in = expires_in
        self.omit_expires_in = omit_expires_in
        self.token_field: TokenField = token_field
        self.jwt_lifetime = jwt_lifetime
        self.refresh_token_lifetime = refresh_token_lifetime
        self.host = host
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        self._lock = threading.Lock()
        self._log: list[TokenRequest] = []
        self._refresh_tokens: dict[str, _RefreshToken] = {}
        self._failure: _Failure | None = None
        # Set by start(): nothing is left on disk by a server that never started.
        self.workdir: Path | None = None
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._x5c = ""
        self._server: _TokenHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def realm(self) -> str:
        """The Docker token endpoint, as a registry's challenge names it."""
        return self.url + "/token"

    @property
    def acr_realm(self) -> str:
        """ACR's token endpoint, which ACR's own challenges name."""
        return self.url + "/oauth2/token"

    @property
    def cert_path(self) -> Path:
        if self.workdir is None:
            raise RuntimeError("the token server has not been started")
        return self.workdir / "token.crt"

    @property
    def key_path(self) -> Path:
        return self.cert_path.with_suffix(".key")

    # The request log.

    @property
    def requests(self) -> list[TokenRequest]:
        """Everything but the testbed's own requests, oldest first."""
        with self._lock:
            return [r for r in self._log if not r.testbed]

    @property
    def all_requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._log)

    def count(
        self, path: str | None = None, *, method: str | None = None, grant_type: str | None = None
    ) -> int:
        return sum(
            1
            for r in self.requests
            if (path is None or r.path == path)
            and (method is None or r.method == method)
            and (grant_type is None or r.grant_type == grant_type)
        )

    def clear(self) -> None:
        with self._lock:
            self._log.clear()

    def reset(self) -> None:
        """Back to a clean state between tests; issued refresh tokens stay valid."""
        with self._lock:
            self._log.clear()
            self._failure = None
            (
                self.expires_in,
                self.omit_expires_in,
                self.token_field,
                self.jwt_lifetime,
                self.refresh_token_lifetime,
            ) = self._defaults

    def fail_requests(
        self,
        status: int = 500,
        body: str | None = None,
        *,
        path: str | None = None,
        times: int | None = None,
    ) -> None:
        """Answer requests (to `path` only, if given) with `status`, for retry tests.

        `times` limits it to the next N such requests; None is until `stop_failing()`. The
        testbed's own requests are never failed, so pushes keep working.
        """
        text = body if body is not None else json.dumps(_errors("UNAVAILABLE", "injected failure"))
        with self._lock:
            self._failure = _Failure(status, text.encode(), path, times)

    def stop_failing(self) -> None:
        with self._lock:
            self._failure = None

    def _take_failure(self, path: str, testbed: bool) -> _Failure | None:
        with self._lock:
            failure = self._failure
            if failure is None or testbed or (failure.path is not None and failure.path != path):
                return None
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failure = None
            return failure

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self._log.append(request)

    # Tokens.

    def issue_refresh_token(self, user: str) -> str:
        """An opaque refresh token for `user`, as the password grant would hand out."""
        if user not in self.users:
            raise ValueError(f"unknown user {user!r}")
        token = secrets.token_urlsafe(32)
        self._store_refresh_token(token, user)
        return token

    def revoke_refresh_tokens(self) -> None:
        with self._lock:
            self._refresh_tokens.clear()

    def _store_refresh_token(self, token: str, user: str) -> None:
        with self._lock:
            self._refresh_tokens[token] = _RefreshToken(
                user, time.time() + self.refresh_token_lifetime
            )

    def _refresh_token_user(self, token: str) -> str | None:
        with self._lock:
            entry = self._refresh_tokens.get(token)
        if entry is None or entry.expires_at < time.time():
            return None
        return entry.user

    def mint_access_token(self, *scopes: str, user: str | None = None) -> str:
        """A token as the server would issue it to `user` (None: anonymous), without a request."""
        return self._access_token(user, self._grant(user, scopes))

    def _sign(self, claims: Mapping[str, Any]) -> str:
        if self._key is None:
            raise RuntimeError("the token server has not been started")
        header = {"alg": "ES256", "typ": "JWT", "x5c": [self._x5c]}
        signing_input = f"{_json_b64(header)}.{_json_b64(claims)}"
        r, s = decode_dss_signature(
            self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        # JWS wants the raw 64-byte r||s, not the DER sequence cryptography produces.
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _access_token(self, user: str | None, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        lifetime = self.jwt_lifetime if self.jwt_lifetime is not None else self.expires_in
        return self._sign(
            {
                "iss": self.issuer,
                # Anonymous tokens carry an empty subject, as Docker Hub's do.
                "sub": user or "",
                "aud": self.service,
                "exp": now + lifetime,
                "nbf": now,
                "iat": now,
                "jti": secrets.token_hex(16),
                "access": access,
            }
        )

    def _acr_refresh_token(self, user: str) -> str:
        # ACR's refresh tokens are JWTs and clients read their `exp` to cache them.
        now = int(time.time())
        claims: dict[str, Any] = {
            "jti": secrets.token_hex(16),
            "sub": user,
            "nbf": now,
            "exp": now + self.refresh_token_lifetime,
            "iat": now,
            "iss": self.issuer,
            "aud": self.service,
            "version": "1.0",
            "grant_type": "refresh_token",
        }
        if self.tenant is not None:
            claims["tenant"] = self.tenant
        token = self._sign(claims)
        self._store_refresh_token(token, user)
        return token

    def _allowed(self, user: str | None, repository: str) -> Collection[str]:
        if user is not None and user == self.admin[0]:
            return _ADMIN_ACTIONS
        if user is not None or any(
            fnmatch.fnmatchcase(repository, p) for p in self.public_repositories
        ):
            return ("pull",)
        return ()

    def _grant(self, user: str | None, scopes: Iterable[str]) -> list[dict[str, Any]]:
        granted: dict[str, list[str]] = {}
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None or parsed[0] != "repository":
                continue
            _, name, actions = parsed
            allowed = self._allowed(user, name)
            kept = granted.setdefault(name, [])
            kept.extend(a for a in actions if a in allowed and a not in kept)
        return [
            {"type": "repository", "name": name, "actions": actions}
            for name, actions in granted.items()
            if actions
        ]

    # Request handling: each returns the answer, or raises _Refused.

    def _handle(
        self, method: str, path: str, params: Mapping[str, tuple[str, ...]], basic: _Basic
    ) -> _Answer:
        routes = {
            "/token": {"GET": self._get_docker, "POST": self._post_docker},
            "/oauth2/token": {"GET": self._get_acr, "POST": self._post_acr},
            "/oauth2/exchange": {"POST": self._exchange},
        }
        by_method = routes.get(path)
        if by_method is None:
            return _Answer(404, _errors("NOT_FOUND", f"no endpoint {path}"))
        handler = by_method.get(method)
        if handler is None:
            return _Answer(405, _errors("UNSUPPORTED", f"{method} is not allowed on {path}"))
        try:
            return handler(params, basic)
        except _Refused as refused:
            return refused.answer

    def _check_service(self, params: Mapping[str, tuple[str, ...]], *, required: bool) -> None:
        service = _param(params, "service")
        if service is None and required:
            raise _Refused(400, "INVALID_REQUEST", "service is required")
        if service is not None and service != self.service:
            raise _Refused(400, "INVALID_REQUEST", f"unknown service {service!r}")

    def _basic_user(self, basic: _Basic) -> str | None:
        if not basic.present:
            return None
        if basic.user is None or self.users.get(basic.user) != basic.password:
            raise _Refused(401, "UNAUTHORIZED", "authentication required")
        return basic.user

    def _form_user(self, params: Mapping[str, tuple[str, ...]]) -> str:
        grant_type = _param(params, "grant_type")
        if grant_type == "password":
            user, password = _param(params, "username"), _param(params, "password")
            if user is None or self.users.get(user) != password:
                raise _Refused(401, "UNAUTHORIZED", "invalid username or password")
            return user
        if grant_type == "refresh_token":
            found = self._refresh_token_user(_param(params, "refresh_token") or "")
            if found is None:
                raise _Refused(401, "UNAUTHORIZED", "invalid or expired refresh token")
            return found
        raise _Refused(400, "UNSUPPORTED", f"unsupported grant_type {grant_type!r}")

    def _docker_fields(self, token: str) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.token_field in ("both", "token"):
            body["token"] = token
        if self.token_field in ("both", "access_token"):
            body["access_token"] = token
        return body

    def _lifetime_fields(self) -> dict[str, Any]:
        body: dict[str, Any] = {"issued_at": _rfc3339(time.time())}
        if not self.omit_expires_in:
            body["expires_in"] = self.expires_in
        return body

    def _get_docker(self, params: Mapping[str, tuple[str, ...]], basic: _Basic) -> _Answer:
        self._check_service(params, required=False)
        user = self._basic_user(basic)
        token = self._access_token(user, self._grant(user, _scopes(params)))
        return _Answer(200, {**self._docker_fields(token), **self._lifetime_fields()}, user)

    def _get_acr(self, params: Mapping[str, tuple[str, ...]], basic: _Basic) -> _Answer:
        self._check_service(params, required=True)
        user = self._basic_user(basic)
        token = self._access_token(user, self._grant(user, _scopes(params)))
        return _Answer(200, {"access_token": token}, user)

    def _post_docker(self, params: Mapping[str, tuple[str, ...]], basic: _Basic) -> _Answer:
        self._check_service(params, required=True)
        user = self._form_user(params)
        access = self._grant(user, _scopes(params))
        body: dict[str, Any] = {"access_token": self._access_token(user, access)}
        body.update(self._lifetime_fields())
        body["scope"] = " ".join(
            f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access
        )
        if _param(params, "grant_type") == "password":
            body["refresh_token"] = self.issue_refresh_token(user)
        return _Answer(200, body, user)

    def _post_acr(self, params: Mapping[str, tuple[str, ...]], basic: _Basic) -> _Answer:
        self._check_service(params, required=True)
        user = self._form_user(params)
        token = self.mint_access_token(*_scopes(params), user=user)
        return _Answer(200, {"access_token": token}, user)

    def _exchange(self, params: Mapping[str, tuple[str, ...]], basic: _Basic) -> _Answer:
        grant_type = _param(params, "grant_type")
        if grant_type != "access_token":
            raise _Refused(400, "UNSUPPORTED", f"unsupported grant_type {grant_type!r}")
        self._check_service(params, required=True)
        tenant = _param(params, "tenant")
        if self.tenant is not None and tenant is not None and tenant != self.tenant:
            raise _Refused(401, "UNAUTHORIZED", f"unknown tenant {tenant!r}")
        user = self.aad_tokens.get(_param(params, "access_token") or "")
        if user is None:
            raise _Refused(401, "UNAUTHORIZED", "invalid AAD access token")
        return _Answer(200, {"refresh_token": self._acr_refresh_token(user)}, user)

    # Lifecycle.

    def start(self) -> Self:
        self.workdir = Path(tempfile.mkdtemp(prefix="acr-blob-token-"))
        try:
            self._key, cert = _make_signing_cert(self.workdir)
            self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
            self._server = _TokenHTTPServer((self.host, self.port), self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"token-server-{self.port}",
                daemon=True,
            )
            self._thread.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def _param(params: Mapping[str, tuple[str, ...]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


def _scopes(params: Mapping[str, tuple[str, ...]]) -> list[str]:
    # Repeated `scope` parameters (Docker) and space-separated ones (OAuth2) both occur.
    return [s for value in params.get("scope", ()) for s in value.split()]


@dataclass(frozen=True)
class _Basic:
    present: bool
    user: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, header: str | None) -> _Basic:
        if header is None:
            return cls(False)
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return cls(False)
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return cls(True)
        user, sep, password = decoded.partition(":")
        return cls(True, user, password) if sep else cls(True)


class _TokenHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], tokens: TokenServer) -> None:
        self.tokens = tokens
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that hang up mid-answer are part of some tests; their resets are not news.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes; with Nagle on, each token fetch would wait
    # for a delayed ACK (about 40 ms).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        tokens = cast(_TokenHTTPServer, self.server).tokens
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        params: dict[str, list[str]] = {}
        for source in (parts.query, self._form()):
            for name, values in parse_qs(source, keep_blank_values=True).items():
                params.setdefault(name, []).extend(values)
        frozen = {name: tuple(values) for name, values in params.items()}
        basic = _Basic.parse(self.headers.get("Authorization"))
        testbed = self.headers.get("User-Agent") == TESTBED_USER_AGENT
        failure = tokens._take_failure(parts.path, testbed)
        if failure is not None:
            status, body, user = failure.status, failure.body, None
        else:
            answer = tokens._handle(self.command, parts.path, frozen, basic)
            status, body, user = answer.status, json.dumps(answer.body).encode(), answer.user
        tokens._record(
            TokenRequest(
                method=self.command,
                path=parts.path,
                params=frozen,
                basic_present=basic.present,
                basic_user=basic.user,
                user=user,
                status=status,
                testbed=testbed,
                query={name: tuple(values) for name, values in query.items()},
                headers=tuple(self.headers.items()),
            )
        )
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

    def _form(self) -> str:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_FORM:
            self.close_connection = True
            return ""
        return self.rfile.read(length).decode("utf-8", errors="replace") if length else ""


class BearerAuth(httpx.Auth):
    """Sends a fixed bearer token with every request."""

    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


def fetch_token(
    realm: str,
    *,
    service: str,
    scopes: Iterable[str],
    auth: tuple[str, str] | None = None,
    user_agent: str | None = None,
    verify: ssl.SSLContext | bool = True,
) -> str:
    """A token from `realm` by the Docker GET protocol (`token`, else `access_token`)."""
    params = httpx.QueryParams([("service", service), *(("scope", s) for s in scopes)])
    headers = {"User-Agent": user_agent} if user_agent else {}
    # Over plain http there is nothing to verify, and skipping it saves loading the CA bundle
    # (about 20 ms, once per push).
    verify = verify if realm.startswith("https:") else False
    with httpx.Client(trust_env=False, verify=verify, timeout=10.0) as client:
        response = client.get(realm, params=params, auth=auth, headers=headers)
    if response.status_code != 200:
        raise httpx.HTTPStatusError(
            f"fetching a token: {response.status_code} {response.text[:500]}",
            request=response.request,
            response=response,
        )
    body = response.json()
    token = body.get("token") or body.get("access_token")
    if not isinstance(token, str):
        raise ValueError(f"no token in the token server's answer: {sorted(body)}")
    return token
