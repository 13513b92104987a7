"""acr-blob: verified, streaming blob downloads from Azure Container Registry and any OCI registry.

Example::

    from acr_blob import BlobClient

    with BlobClient("myregistry.azurecr.io", ("user", "password")) as client:
        client.download_blob_to_file("prod/bash", "sha256:...", "layer.tar.gz")
"""

from ._async import AsyncBlobClient, AsyncBlobDownload
from ._config import DEFAULT_TIMEOUT, Credential
from ._log_redaction import disable_log_redaction, enable_log_redaction
from ._progress import ProgressCallback
from ._sync import BlobClient, BlobDownload
from ._version import __version__
from .auth import RegistryAuth
from .credentials import BasicCredential, RefreshTokenCredential, TokenCredential
from .docker_config import docker_config_credential
from .errors import (
    AuthenticationError,
    BlobError,
    BlobNotFoundError,
    BlobSizeError,
    CredentialHelperError,
    DeadlineExceededError,
    DigestMismatchError,
    DiskFullError,
    DockerConfigError,
    InsecureCredentialError,
    InsecureRedirectError,
    InvalidDigestError,
    InvalidEndpointError,
    InvalidRedirectError,
    InvalidRepositoryError,
    RedirectError,
    RegistryError,
    ResumeError,
    StorageError,
    TooManyRedirectsError,
    TransportError,
)
from .models import BlobProperties
from .references import (
    BlobReference,
    Digest,
    parse_blob_reference,
    parse_digest,
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
    "AuthenticationError",
    "BasicCredential",
    "BlobClient",
    "BlobDownload",
    "BlobError",
    "BlobNotFoundError",
    "BlobProperties",
    "BlobReference",
    "BlobSizeError",
    "Credential",
    "CredentialHelperError",
    "DeadlineExceededError",
    "Digest",
    "DigestMismatchError",
    "DiskFullError",
    "DockerConfigError",
    "InsecureCredentialError",
    "InsecureRedirectError",
    "InvalidDigestError",
    "InvalidEndpointError",
    "InvalidRedirectError",
    "InvalidRepositoryError",
    "ProgressCallback",
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
    "validate_repository",
]
