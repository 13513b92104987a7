"""Token-flow behaviour that needs a misbehaving or scripted server (httpx.MockTransport):
rotated tokens, odd token answers, lifetimes. The protocol itself is tested against the real
registry and token server in test_auth.py."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from acr_blob import AuthenticationError, BasicCredential, BlobClient, RegistryAuth

DATA = b"blob"
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
REPO = "team/app"
REALM = "https://auth.test/token"
CHALLENGE = f'Bearer realm="{REALM}",service="registry.test",scope="repository:{REPO}:pull"'


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def jwt(exp: float) -> str:
    def part(document: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part({'exp': exp})}.sig"


class Registry:
    """A bearer-protected registry and its token server, scripted."""

    def __init__(self, answers: Iterator[dict[str, object]]) -> None:
        self.answers = answers
        self.accepted: set[str] = set()
        self.token_requests = 0
        self.challenges = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            self.token_requests += 1
            answer = next(self.answers)
            if isinstance(answer.get("access_token"), str):
                self.accepted.add(str(answer["access_token"]))
            return httpx.Response(200, json=answer)
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if sent in self.accepted:
            return httpx.Response(200, content=DATA)
        self.challenges += 1
        error = ',error="invalid_token"' if sent else ""
        return httpx.Response(401, headers={"WWW-Authenticate": CHALLENGE + error})


def client(registry: Registry, auth: RegistryAuth) -> BlobClient:
    return BlobClient("https://registry.test", auth, transport=httpx.MockTransport(registry))


def test_a_rotated_token_is_replaced_once() -> None:
    registry = Registry(iter([{"access_token": "t1"}, {"access_token": "t2"}]))
    with client(registry, RegistryAuth()) as blobs:
        assert blobs.download_blob(REPO, DIGEST).readall() == DATA
        assert blobs.download_blob(REPO, DIGEST).readall() == DATA
        assert registry.token_requests == 1
        registry.accepted.discard("t1")  # the registry stops honouring t1
        assert blobs.download_blob(REPO, DIGEST).readall() == DATA
    assert registry.token_requests == 2


def test_a_token_refused_twice_is_an_authentication_error_not_a_loop() -> None:
    registry = Registry(iter([{"access_token": "t1"}, {"access_token": "t2"}]))

    def never_accept(request: httpx.Request) -> httpx.Response:
        response = registry(request)
        registry.accepted.clear()
        return response

    with (
        BlobClient(
            "https://registry.test", RegistryAuth(), transport=httpx.MockTransport(never_accept)
        ) as blobs,
        pytest.raises(AuthenticationError) as caught,
    ):
        blobs.download_blob(REPO, DIGEST)
    assert caught.value.scope == f"repository:{REPO}:pull"
    assert registry.token_requests == 1


@pytest.mark.parametrize(
    ("answer", "lifetime"),
    [
        ({"token": "a"}, 60),  # no expires_in: 60 s
        ({"access_token": "b", "expires_in": 600}, 600),
        # ACR answers only a JWT; its exp decides.
        ({"access_token": jwt(time.time() + 1200)}, 1200),
        # Issued five minutes ago with ten minutes to live: five remain.
        (
            {
                "token": "c",
                "expires_in": 600,
                "issued_at": -300,  # seconds before the test runs (not before collection)
            },
            300,
        ),
    ],
)
def test_token_lifetime_and_refresh(answer: dict[str, object], lifetime: int) -> None:
    clock = FakeClock()
    if isinstance(ago := answer.get("issued_at"), int):
        issued = time.gmtime(time.time() + ago)
        answer = {**answer, "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", issued)}
    token = answer.get("access_token") or answer.get("token")
    registry = Registry(iter([answer, answer, answer]))
    registry.accepted.add(str(token))
    with client(registry, RegistryAuth(clock=clock)) as blobs:
        blobs.download_blob(REPO, DIGEST).readall()
        assert registry.token_requests == 1
        start = clock.now
        clock.now = start + lifetime * 0.8  # well inside the lifetime
        blobs.download_blob(REPO, DIGEST).readall()
        assert registry.token_requests == 1
        clock.now = start + lifetime - 1  # inside the renewal margin: renewed before it expires
        blobs.download_blob(REPO, DIGEST).readall()
        assert registry.token_requests == 2


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"expires_in": 60}', b'{"token": ""}'])
def test_odd_token_answers_are_authentication_errors(body: bytes) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            return httpx.Response(200, content=body)
        return httpx.Response(401, headers={"WWW-Authenticate": CHALLENGE})

    with (
        BlobClient(
            "https://registry.test",
            BasicCredential("alice", "pa55word"),
            transport=httpx.MockTransport(respond),
        ) as blobs,
        pytest.raises(AuthenticationError) as caught,
    ):
        blobs.download_blob(REPO, DIGEST)
    assert caught.value.scope == f"repository:{REPO}:pull"
    assert "pa55word" not in str(caught.value)


def test_insufficient_scope_fetches_a_token_for_the_scope_the_registry_names() -> None:
    wider = f"repository:{REPO}:pull,push"
    scopes_asked: list[str] = []
    state = {"needed": f"repository:{REPO}:pull"}
    issued: dict[str, str] = {}

    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            scope = request.url.params["scope"]
            scopes_asked.append(scope)
            issued[f"t{len(scopes_asked)}"] = scope
            return httpx.Response(200, json={"token": f"t{len(scopes_asked)}"})
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if issued.get(sent) == state["needed"]:
            return httpx.Response(200, content=DATA)
        challenge = f'Bearer realm="{REALM}",service="registry.test",scope="{state["needed"]}"'
        if sent:
            challenge += ',error="insufficient_scope"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    with BlobClient(
        "https://registry.test", RegistryAuth(), transport=httpx.MockTransport(respond)
    ) as blobs:
        assert blobs.download_blob(REPO, DIGEST).readall() == DATA
        state["needed"] = wider
        assert blobs.download_blob(REPO, DIGEST).readall() == DATA
        assert blobs.download_blob(REPO, DIGEST).readall() == DATA
    assert scopes_asked == [f"repository:{REPO}:pull", wider]
