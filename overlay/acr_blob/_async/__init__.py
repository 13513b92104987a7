"""The clients, their downloads and the drivers of parallel parts.

``acr_blob/_async`` is the source; ``acr_blob/_sync`` is made from it by ``tools/unasync.py``
(``make generate-sync``) and checked against it by ``make check-sync``.
"""

from .client import AsyncBlobClient
from .download import AsyncBlobDownload

__all__ = ["AsyncBlobClient", "AsyncBlobDownload"]
