"""A one-layer image whose layer is a given blob, for clients that fetch images, not blobs (skopeo).

The image is an OCI image manifest with the config `{}` (pushed here) and the blob as its only
layer; the blob must already be in the repository. The registry checks that both exist.
"""

from __future__ import annotations

import hashlib
import json
import ssl

import httpx

from tools.testbed.deployments import Deployment
from tools.testbed.push import push_blob
from tools.testbed.token_server import BearerAuth

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
# The blob is opaque bytes: the uncompressed type keeps a client from trying to decompress it.
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
CONFIG = b"{}"

Auth = httpx.Auth | tuple[str, str] | None


def single_layer_manifest(layer_digest: str, layer_size: int) -> bytes:
    """The manifest's bytes, as pushed (its sha256 is the manifest's digest)."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": f"sha256:{hashlib.sha256(CONFIG).hexdigest()}",
            "size": len(CONFIG),
        },
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer_size}],
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


def push_single_layer_image(
    registry: str | Deployment,
    repository: str,
    tag: str,
    layer_digest: str,
    layer_size: int,
    auth: Auth = None,
    verify: ssl.SSLContext | bool = True,
) -> None:
    """Tag, in `repository`, an image whose only layer is the blob `layer_digest`.

    `registry` is the registry's URL, or a testbed Deployment: then its URL, its trust and its
    push credentials (a pull+push token on a token-auth registry) are used, and `auth` and
    `verify` are ignored.
    """
    if isinstance(registry, Deployment):
        url = registry.url
        verify = registry.verify
        auth = (
            BearerAuth(registry.push_token(repository))
            if registry.token_server is not None
            else registry.auth
        )
    else:
        url = registry.rstrip("/")
    push_blob(url, repository, CONFIG, auth=auth, verify=verify)
    with httpx.Client(auth=auth, verify=verify, trust_env=False, timeout=30.0) as client:
        response = client.put(
            f"{url}/v2/{repository}/manifests/{tag}",
            content=single_layer_manifest(layer_digest, layer_size),
            headers={"Content-Type": OCI_MANIFEST},
        )
    if response.status_code != 201:
        raise httpx.HTTPStatusError(
            f"pushing the manifest {repository}:{tag}: "
            f"{response.status_code} {response.text[:500]}",
            request=response.request,
            response=response,
        )
