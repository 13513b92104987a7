# Generated from acr_blob/_async/__init__.py by tools/unasync.py: do not edit.
"""The clients, their downloads and the drivers of parallel parts.

``acr_blob/_async`` is the source; ``acr_blob/_sync`` is made from it by ``tools/unasync.py``
(``make generate-sync``) and checked against it by ``make check-sync``.
"""

from .client import BlobClient
from .download import BlobDownload

__all__ = ["BlobClient", "BlobDownload"]
