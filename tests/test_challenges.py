"""WWW-Authenticate parsing: the forms registries and proxies send, and anything at all."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from acr_blob.challenges import Challenge, parse_challenges


def test_docker_bearer_challenge() -> None:
    header = (
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:library/ubuntu:pull,push",error="insufficient_scope"'
    )
    assert parse_challenges([header]) == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.example.com/token",
                "service": "registry.example.com",
                "scope": "repository:library/ubuntu:pull,push",
                "error": "insufficient_scope",
            },
        )
    ]


def test_several_challenges_in_one_header_and_in_several() -> None:
    found = parse_challenges(
        ['Basic realm="a, b", BEARER Realm="https://t/token", Service=svc', "Negotiate"]
    )
    assert [c.scheme for c in found] == ["basic", "bearer", "negotiate"]
    assert found[0].params == {"realm": "a, b"}
    assert found[1].params == {"realm": "https://t/token", "service": "svc"}


def test_escapes_spaces_and_token68() -> None:
    found = parse_challenges(['Bearer realm = "a\\"b" , scope="x"', "Basic dXNlcjpwYXNz=="])
    assert found[0].params == {"realm": 'a"b', "scope": "x"}
    assert found[1] == Challenge("basic", {})


def test_garbage_is_skipped() -> None:
    assert parse_challenges(["", ",,,", '"quoted" only', "=x"]) == []


@given(st.lists(st.text(max_size=200), max_size=4))
def test_any_header_parses_without_raising(headers: list[str]) -> None:
    for challenge in parse_challenges(headers):
        assert challenge.scheme == challenge.scheme.lower()
        assert all(name == name.lower() for name in challenge.params)


def test_a_backslash_escape_is_resolved_once() -> None:
    # realm="C:\\temp" is C:\temp (RFC 9110 quoted-pair): urllib's parse_http_list resolves the
    # escape, and _unquote once resolved it again, leaving C:temp.
    [challenge] = parse_challenges(['Basic realm="C:\\\\temp", charset="a\\"b"'])
    assert challenge.params == {"realm": "C:\\temp", "charset": 'a"b'}
