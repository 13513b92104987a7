"""What acr-blob tells about a blob."""

from __future__ import annotations

import attrs

__all__ = ["BlobProperties"]


@attrs.frozen
class BlobProperties:
    """A blob's size, digest, media type and ETag, as the registry (or its storage) answered.

    ``digest`` is the requested digest; when a download returns these, the content was verified
    against it. ``size`` is ``None`` when the server sent no ``Content-Length``.

    Its repr shows every field:
    ``BlobProperties(digest='sha256:...', size=1234, media_type='application/octet-stream',
    etag='"sha256:..."')``.

    Example::

        properties = client.get_blob_properties("library/ubuntu", digest)
        print(properties.size, properties.media_type)
    """

    digest: str
    size: int | None
    media_type: str | None = None
    etag: str | None = None
