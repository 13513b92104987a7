"""acr-blob: verified, streaming blob downloads from Azure Container Registry and any OCI registry.

Example::

    from acr_blob import BlobClient

    with BlobClient("myregistry.azurecr.io", ("user", "password")) as client:
        client.download_blob_to_file("prod/bash", "sha256:...", "layer.tar.gz")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._log_redaction import disable_log_redaction, enable_log_redaction
from ._progress import ProgressCallback
from ._version import __version__
from .errors import (
    AuthenticationError,
    BlobError,
    BlobNotFoundError,
    BlobSizeError,
    CacheMissError,
    CredentialHelperError,
    DeadlineExceededError,
    DigestMismatchError,
    DiskFullError,
    DockerConfigError,
    HostsConfigError,
    InsecureCredentialError,
    InsecureRedirectError,
    InvalidDigestError,
    InvalidEndpointError,
    InvalidRedirectError,
    InvalidRepositoryError,
    ManifestError,
    PlatformNotFoundError,
    RedirectError,
    RegistryError,
    ResumeError,
    StorageError,
    TooManyRedirectsError,
    TransportError,
)

if TYPE_CHECKING:
    from ._async import AsyncBlobClient, AsyncBlobDownload
    from ._config import DEFAULT_TIMEOUT, AsyncCredential, Credential
    from ._sync import BlobClient, BlobDownload
    from .auth import RegistryAuth
    from .cache import BlobCache, CacheEntry
    from .credentials import (
        AsyncTokenCredential,
        BasicCredential,
        RefreshTokenCredential,
        TokenCredential,
    )
    from .docker_config import docker_config_credential
    from .manifests import Manifest, Platform, PullResult
    from .mirrors import Mirror, read_hosts_toml
    from .models import BlobProperties
    from .references import (
        BlobReference,
        Digest,
        ImageReference,
        parse_blob_reference,
        parse_digest,
        parse_image_reference,
        validate_repository,
    )
    from .retry import RetryPolicy

# httpx logs signed URLs at INFO and httpcore credential headers at DEBUG: redact them for
# everyone who turns logging on, the way azure-core's logging policy does by default.
enable_log_redaction()

__all__ = [
    "DEFAULT_TIMEOUT",
    "AsyncBlobClient",
    "AsyncBlobDownload",
    "AsyncCredential",
    "AsyncTokenCredential",
    "AuthenticationError",
    "BasicCredential",
    "BlobCache",
    "BlobClient",
    "BlobDownload",
    "BlobError",
    "BlobNotFoundError",
    "BlobProperties",
    "BlobReference",
    "BlobSizeError",
    "CacheEntry",
    "CacheMissError",
    "Credential",
    "CredentialHelperError",
    "DeadlineExceededError",
    "Digest",
    "DigestMismatchError",
    "DiskFullError",
    "DockerConfigError",
    "HostsConfigError",
    "ImageReference",
    "InsecureCredentialError",
    "InsecureRedirectError",
    "InvalidDigestError",
    "InvalidEndpointError",
    "InvalidRedirectError",
    "InvalidRepositoryError",
    "Manifest",
    "ManifestError",
    "Mirror",
    "Platform",
    "PlatformNotFoundError",
    "ProgressCallback",
    "PullResult",
    "RedirectError",
    "RefreshTokenCredential",
    "RegistryAuth",
    "RegistryError",
    "ResumeError",
    "RetryPolicy",
    "StorageError",
    "TokenCredential",
    "TooManyRedirectsError",
    "TransportError",
    "__version__",
    "disable_log_redaction",
    "docker_config_credential",
    "enable_log_redaction",
    "parse_blob_reference",
    "parse_digest",
    "parse_image_reference",
    "read_hosts_toml",
    "validate_repository",
]

# Everything but the errors, the log redaction and the version is imported on first use
# (PEP 562): the clients bring the generated client and the file machinery, auth the generated
# models, docker_config subprocess, and the rest attrs. `import acr_blob` and `acr-blob --help`
# need none of them.
_LAZY = {
    "AsyncBlobClient": "._async",
    "AsyncBlobDownload": "._async",
    "BlobClient": "._sync",
    "BlobDownload": "._sync",
    "DEFAULT_TIMEOUT": "._config",
    "Credential": "._config",
    "AsyncCredential": "._config",
    "RegistryAuth": ".auth",
    "BlobCache": ".cache",
    "CacheEntry": ".cache",
    "Mirror": ".mirrors",
    "Manifest": ".manifests",
    "Platform": ".manifests",
    "PullResult": ".manifests",
    "ImageReference": ".references",
    "parse_image_reference": ".references",
    "read_hosts_toml": ".mirrors",
    "BasicCredential": ".credentials",
    "RefreshTokenCredential": ".credentials",
    "TokenCredential": ".credentials",
    "AsyncTokenCredential": ".credentials",
    "docker_config_credential": ".docker_config",
    "BlobProperties": ".models",
    "BlobReference": ".references",
    "Digest": ".references",
    "parse_blob_reference": ".references",
    "parse_digest": ".references",
    "validate_repository": ".references",
    "RetryPolicy": ".retry",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
