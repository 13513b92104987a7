"""Parsing ``WWW-Authenticate`` challenges (RFC 9110 section 11.6.1), as registries send them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.request import parse_http_list

import attrs

__all__ = ["Challenge", "parse_challenges"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@attrs.frozen
class Challenge:
    """One challenge: its scheme in lowercase and its parameters (names in lowercase).

    Example::

        >>> parse_challenges(['Bearer realm="https://a/token",service="a"'])[0].params["service"]
        'a'
    """

    scheme: str
    params: dict[str, str] = attrs.field(factory=dict)

    def get(self, name: str) -> str | None:
        """The parameter ``name`` (lowercase), or ``None``.

        Example::

            >>> parse_challenges(['Basic realm="registry"'])[0].get("realm")
            'registry'
        """
        return self.params.get(name)


def _unquote(value: str) -> str:
    # parse_http_list has already resolved the quoted string's backslash escapes.
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def parse_challenges(headers: Iterable[str]) -> list[Challenge]:
    """Every challenge in the given header values; malformed pieces are skipped, never raised.

    Handles several challenges in one header or several headers, quoted values with commas and
    escapes, and any letter case in schemes and parameter names.

    Example::

        >>> [c.scheme for c in parse_challenges(['Basic realm="r", Bearer realm="https://a/t"'])]
        ['basic', 'bearer']
    """
    challenges: list[Challenge] = []
    for header in headers:
        # parse_http_list splits at commas outside quoted strings (httpx imports
        # urllib.request anyway, so it costs no start-up time).
        for item in parse_http_list(header):
            item = item.strip()
            if not item:
                continue
            head, equals, rest = item.partition("=")
            words = head.split()
            if len(words) == 2 or (len(words) == 1 and not equals):
                # "Scheme name=value" or a bare "Scheme": a new challenge begins.
                scheme = words[0]
                if not _TOKEN.fullmatch(scheme):
                    continue
                challenges.append(Challenge(scheme.lower()))
                # "Scheme token68==" carries no parameters.
                if len(words) == 2 and _TOKEN.fullmatch(words[1]) and rest.strip("="):
                    challenges[-1].params[words[1].lower()] = _unquote(rest)
            elif len(words) == 1 and challenges and _TOKEN.fullmatch(words[0]):
                challenges[-1].params[words[0].lower()] = _unquote(rest)
    return challenges
