"""Mirrors: registries that serve the origin's blobs in its place, tried before it.

A mirror is any server of the registry protocol that holds (or fetches) the origin's blobs: a
pull-through cache (distribution's proxy mode, Harbor, Artifactory), or a node-local layer such
as Spegel, Dragonfly or Kraken. Blobs are content-addressed and every byte is verified, so a
mirror that lies costs a try at the next host, never a wrong byte. Mirrors come from the
clients' ``mirrors=`` (:class:`Mirror`, or URLs) or from containerd's ``hosts.toml`` files
(:func:`read_hosts_toml`, the clients' ``hosts_dir=``).
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import threading
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import attrs
import httpx

from ._config import Credential, TimeoutTypes, VerifyTypes, parse_http_url
from .docker_config import docker_config_credential
from .errors import (
    BlobError,
    BlobNotFoundError,
    DeadlineExceededError,
    DockerConfigError,
    HostsConfigError,
)
from .references import is_docker_hub

__all__ = ["DEAD_MIRROR_SECONDS", "HostsConfig", "Mirror", "read_hosts_toml"]

logger = logging.getLogger("acr_blob")

CAPABILITIES = frozenset({"pull", "resolve", "push"})
DEAD_MIRROR_SECONDS = 30.0
"""How long a client skips a mirror after a failure other than "not found" there."""

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def normalize_mirror_url(url: object) -> str:
    """``http(s)://HOST[:PORT][/PATH]`` without a trailing slash; anything else is an error."""
    parsed = parse_http_url(url, "mirror URL", HostsConfigError)
    if parsed.query or parsed.userinfo or parsed.fragment:
        raise HostsConfigError(
            f"invalid mirror URL {url!r}: no query, fragment or credentials in a mirror's URL "
            "(give a credential with Mirror(url, credential))"
        )
    return str(parsed)


def _capabilities(value: Iterable[str]) -> frozenset[str]:
    return frozenset([value] if isinstance(value, str) else value)


@attrs.frozen
class Mirror:
    """One mirror: its URL, and how to talk to it.

    ``url`` is ``https://HOST[:PORT]`` (or ``http://``), optionally with a path: requests go to
    ``URL/v2/...``, or with ``override_path`` to ``URL/...`` (the path then already names the
    API root, as containerd's option says). ``credential`` is used only when the mirror itself
    challenges (``None``: the Docker configuration's credential for the mirror's host, if any);
    the origin's credential never goes to a mirror. ``verify`` is as for the clients.
    ``capabilities`` are containerd's: blobs come only from mirrors with ``"pull"``.
    ``headers`` are sent with every request to the mirror; ``connect_timeout`` replaces the
    client's connect timeout for it (containerd's ``dial_timeout``).

    Example::

        BlobClient(
            "myregistry.azurecr.io",
            credential,
            mirrors=[Mirror("http://127.0.0.1:30020"), "https://cache.example.com"],
        )
    """

    url: str = attrs.field(converter=normalize_mirror_url)
    credential: Credential = attrs.field(default=None, repr=False)
    verify: VerifyTypes = True
    capabilities: frozenset[str] = attrs.field(
        default=frozenset({"pull", "resolve"}), converter=_capabilities
    )
    override_path: bool = False
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    connect_timeout: float | None = None

    @capabilities.validator
    def _check_capabilities(
        self, _: attrs.Attribute[frozenset[str]], value: frozenset[str]
    ) -> None:
        unknown = value - CAPABILITIES
        if unknown:
            raise HostsConfigError(
                f"mirror {self.url}: unknown capabilities {sorted(unknown)}; "
                f"use {sorted(CAPABILITIES)}"
            )

    @property
    def host(self) -> str:
        """``host[:port]`` of the mirror, as logs and errors name it."""
        return httpx.URL(self.url).netloc.decode("ascii")

    def request_path(self, path: str) -> str:
        """The path to request at the mirror for the API path ``path`` (``/v2/...``)."""
        return path.removeprefix("/v2") if self.override_path else path


@attrs.frozen
class HostsConfig:
    """What a ``hosts.toml`` says: the mirrors in order, and whether the origin comes last
    (its ``server`` key; without it there is no fallback)."""

    mirrors: tuple[Mirror, ...]
    fallback: bool


def as_mirrors(mirrors: Iterable[Mirror | str] | None) -> tuple[Mirror, ...]:
    """The clients' ``mirrors=``: each a :class:`Mirror` or its URL."""
    if mirrors is None:
        return ()
    if isinstance(mirrors, str | Mirror):
        raise TypeError("mirrors must be a list of Mirror objects or URLs, not a single one")
    return tuple(mirror if isinstance(mirror, Mirror) else Mirror(mirror) for mirror in mirrors)


def read_hosts_toml(hosts_dir: str | os.PathLike[str], registry: str) -> HostsConfig | None:
    """The mirrors ``hosts_dir/<registry>/hosts.toml`` names for ``registry`` (``host[:port]``;
    ``docker.io`` for Docker Hub), else ``hosts_dir/_default/hosts.toml``'s, as containerd
    reads them; ``None`` when there is neither (the origin alone, then).

    The format is containerd's: ``server`` (the origin; absent means no fallback to it), and
    ``[host."URL"]`` tables, tried in the file's order, with ``capabilities``, ``skip_verify``,
    ``ca`` (a path or a list of paths, relative to the file's folder), ``override_path``,
    ``header`` and ``dial_timeout``. ``client`` (TLS client certificates) is refused rather
    than ignored. Raises :class:`~acr_blob.errors.HostsConfigError` for a file that is not so.

    Example::

        config = read_hosts_toml("/etc/containerd/certs.d", "myregistry.azurecr.io")
    """
    for name in (registry, "_default"):
        folder = Path(hosts_dir) / name
        path = folder / "hosts.toml"
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            break
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise HostsConfigError(f"cannot read it: {error}", path=path) from None
    else:
        return None
    hosts = data.get("host", {})
    if not isinstance(hosts, dict):
        raise HostsConfigError("[host] must be a table of tables", path=path)
    mirrors = tuple(_mirror_from(url, table, folder, path) for url, table in hosts.items())
    return HostsConfig(mirrors, fallback="server" in data)


def _mirror_from(url: str, table: Any, folder: Path, path: Path) -> Mirror:
    if not isinstance(table, dict):
        raise HostsConfigError(f'[host."{url}"] must be a table', path=path)
    if "client" in table:
        raise HostsConfigError(
            f'[host."{url}"]: client certificates are not supported; use Mirror(url, verify=...)'
            " with an ssl.SSLContext that loads them",
            path=path,
        )
    verify: VerifyTypes = True
    if table.get("skip_verify") is True:
        verify = False
    elif "ca" in table:
        verify = _ca_context(table["ca"], folder, url, path)
    headers = table.get("header", {})
    if not isinstance(headers, dict):
        raise HostsConfigError(f'[host."{url}"]: header must be a table', path=path)
    try:
        return Mirror(
            url,
            verify=verify,
            capabilities=frozenset(
                _strings(table.get("capabilities", ["pull", "resolve"]), url, path)
            ),
            override_path=table.get("override_path") is True,
            headers={str(name): _header_value(value) for name, value in headers.items()},
            connect_timeout=_duration(table["dial_timeout"], url, path)
            if "dial_timeout" in table
            else None,
        )
    except HostsConfigError as error:
        raise HostsConfigError(str(error), path=path) from None


def _ca_context(value: Any, folder: Path, url: str, path: Path) -> ssl.SSLContext:
    files = _strings([value] if isinstance(value, str) else value, url, path)
    context = ssl.create_default_context()
    for name in files:
        try:
            context.load_verify_locations(cafile=folder / name)
        except (OSError, ssl.SSLError) as error:
            raise HostsConfigError(f'[host."{url}"]: ca {name!r}: {error}', path=path) from None
    return context


def _strings(value: Any, url: str, path: Path) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise HostsConfigError(f'[host."{url}"]: expected a list of strings', path=path)
    return value


def _header_value(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _duration(value: Any, url: str, path: Path) -> float:
    """A Go duration (``"500ms"``, ``"1m30s"``) in seconds."""
    text = str(value)
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise HostsConfigError(f'[host."{url}"]: bad dial_timeout {text!r}', path=path)
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


class MirrorHealth:
    """Which mirrors failed lately, for one client: a mirror that failed is skipped for
    ``DEAD_MIRROR_SECONDS``, so that many downloads do not each wait out a dead mirror."""

    def __init__(self, skip_for: float = DEAD_MIRROR_SECONDS) -> None:
        self._skip_for = skip_for
        self._failed_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def failed(self, host: str) -> None:
        with self._lock:
            self._failed_at[host] = time.monotonic()

    def is_dead(self, host: str) -> bool:
        with self._lock:
            at = self._failed_at.get(host)
            if at is None:
                return False
            if time.monotonic() - at >= self._skip_for:
                del self._failed_at[host]
                return False
            return True


class HostSender(Protocol):
    """What :class:`HostList` and :class:`HostRoute` need of a sender (sync or async)."""

    name: str
    mirror: Mirror | None


S = TypeVar("S", bound=HostSender)


class HostList(Generic[S]):
    """A client's hosts: its mirrors in order, then the origin (unless ``fallback`` is off).
    Mirrors that failed lately are skipped while others remain (see :class:`MirrorHealth`);
    each client's sender kind makes its routes from :meth:`in_order`."""

    def __init__(self, origin: S, mirrors: Sequence[S] = (), *, fallback: bool = True) -> None:
        self.origin = origin
        self.mirrors = list(mirrors)
        # Without a mirror to pull from, the origin is the one host left.
        self.fallback = fallback or not any(
            m.mirror and "pull" in m.mirror.capabilities for m in self.mirrors
        )
        self.health = MirrorHealth()

    def in_order(self, capability: str) -> list[S]:
        """The hosts to ask, in order: the mirrors with ``capability`` (``"resolve"`` for a
        manifest by tag) that are not being skipped, then the origin."""
        able = [m for m in self.mirrors if m.mirror and capability in m.mirror.capabilities]
        live = [m for m in able if not self.health.is_dead(m.name)]
        if self.fallback:
            return [*live, self.origin]
        if not able:
            raise HostsConfigError(
                f"no mirror has the {capability!r} capability, and the origin is not a fallback"
            )
        return live or able


class HostRoute(Generic[S]):
    """One download's way through its hosts: :attr:`sender` is the host serving it, and
    :meth:`move_on` gives up on that host for the next one.

    The error of the last host carries each earlier host's failure
    (:attr:`~acr_blob.errors.BlobError.hosts_tried`). A host whose failure was anything but
    "not found" is skipped by the client's next downloads for a while.
    """

    def __init__(self, hosts: Sequence[S], health: MirrorHealth, what: str) -> None:
        self._hosts = list(hosts)
        self._health = health
        self._what = what
        self._tried: list[tuple[str, str]] = []
        self._announced: S | None = None
        # Whether bytes of the download now under way came from a mirror.
        self.mirror_bytes = False

    @property
    def sender(self) -> S:
        return self._hosts[0]

    def served(self) -> None:
        """The host serving the download answered: logged when it is a new one."""
        if self._announced is not self.sender:
            self._announced = self.sender
            logger.info("%s from %s", self._what, self.sender.name)
        self.mirror_bytes = self.mirror_bytes or self.sender.mirror is not None

    def blame(self, error: BlobError) -> None:
        """The bytes of the host serving the download proved wrong (``error``): a mirror is
        skipped by the client's next downloads for a while."""
        if self.mirror_bytes and self.sender.mirror is not None:
            logger.warning("%s from mirror %s: %s", self._what, self.sender.name, error)
            self._health.failed(self.sender.name)

    def move_on(self, error: BaseException) -> bool:
        """Give up on the host serving the download after ``error``; ``False`` when it was the
        last host (``error`` then names the ones tried before)."""
        if isinstance(error, DeadlineExceededError) or not isinstance(
            error, BlobError | httpx.TransportError
        ):
            return False  # the deadline is the whole download's, not a host's
        if len(self._hosts) < 2:
            if self._tried and isinstance(error, BlobError) and not error.hosts_tried:
                error.hosts_tried = tuple(self._tried)
            return False
        failed = self._hosts.pop(0)
        self._tried.append(
            (failed.name, str(error) if isinstance(error, BlobError) else repr(error))
        )
        if not isinstance(error, BlobNotFoundError):
            self._health.failed(failed.name)
        logger.info(
            "%s: %s failed (%s); trying %s", self._what, failed.name, error, self.sender.name
        )
        return True


@attrs.frozen
class HostPlan:
    """A client's hosts for blobs, from its options: the origin, the mirrors in order, whether
    the origin is the last resort, and the ``ns`` the mirrors get."""

    origin_url: str
    mirrors: tuple[Mirror, ...]
    fallback: bool
    ns: str

    @classmethod
    def of(
        cls,
        origin_url: str,
        mirrors: Iterable[Mirror | str] | None,
        hosts_dir: str | os.PathLike[str] | None,
        fallback: bool | None,
    ) -> HostPlan:
        """``mirrors=`` first, then those of ``hosts_dir``'s ``hosts.toml`` for the origin;
        ``fallback`` (default: ``True``, or what ``hosts.toml`` says) keeps the origin last."""
        netloc = httpx.URL(origin_url).netloc.decode("ascii")
        host = httpx.URL(origin_url).host
        ns = "docker.io" if is_docker_hub(host) else netloc
        listed = as_mirrors(mirrors)
        config = read_hosts_toml(hosts_dir, ns) if hosts_dir is not None else None
        if config is not None:
            listed += config.mirrors
            if fallback is None:
                fallback = config.fallback
        return cls(origin_url, listed, True if fallback is None else fallback, ns)


def mirror_credential(mirror: Mirror) -> Credential:
    """The mirror's own credential, else the Docker configuration's for its host, else none
    (a configuration that cannot be read is warned of, not raised: the mirror is optional)."""
    if mirror.credential is not None:
        return mirror.credential
    try:
        return docker_config_credential(mirror.host)
    except DockerConfigError as error:
        logger.warning("no Docker credential for mirror %s: %s", mirror.host, error)
        return None


def mirror_timeout(timeout: TimeoutTypes, mirror: Mirror) -> TimeoutTypes:
    """The client's timeout, with the mirror's connect timeout where it has one."""
    if mirror.connect_timeout is None:
        return timeout
    base = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
    return httpx.Timeout(
        connect=mirror.connect_timeout, read=base.read, write=base.write, pool=base.pool
    )
