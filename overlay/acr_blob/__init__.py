"""acr-blob: verified, streaming blob downloads from Azure Container Registry and any OCI registry.

Example::

    from acr_blob import BlobClient

    with BlobClient("myregistry.azurecr.io", ("user", "password")) as client:
        client.download_blob_to_file("prod/bash", "sha256:...", "layer.tar.gz")
"""

from ._async import AsyncBlobClient, AsyncBlobDownload
from ._config import DEFAULT_TIMEOUT, Credential, __version__
from ._sync import BlobClient, BlobDownload
from .errors import (
    AuthenticationError,
    BlobError,
    BlobNotFoundError,
    BlobSizeError,
    DigestMismatchError,
    InsecureRedirectError,
    InvalidDigestError,
    InvalidEndpointError,
    InvalidRepositoryError,
    RedirectError,
    RegistryError,
    StorageError,
    TooManyRedirectsError,
    TransportError,
)
from .models import BlobProperties
from .references import Digest, parse_digest, validate_repository

__all__ = [
    "DEFAULT_TIMEOUT",
    "AsyncBlobClient",
    "AsyncBlobDownload",
    "AuthenticationError",
    "BlobClient",
    "BlobDownload",
    "BlobError",
    "BlobNotFoundError",
    "BlobProperties",
    "BlobSizeError",
    "Credential",
    "Digest",
    "DigestMismatchError",
    "InsecureRedirectError",
    "InvalidDigestError",
    "InvalidEndpointError",
    "InvalidRepositoryError",
    "RedirectError",
    "RegistryError",
    "StorageError",
    "TooManyRedirectsError",
    "TransportError",
    "__version__",
    "parse_digest",
    "validate_repository",
]
